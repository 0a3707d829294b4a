//! What every worker adds up while a run goes: the request and failure counters (read live by
//! the progress display) and the latency histograms: the run's whole, exact, and, only where
//! `--plot` or `--hdr-log` asks, the run second by second, in memory that does not grow with
//! the run's length (a bounded [`Timeline`] for the plot; each second handed to the log's
//! writer as it ends).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::recording::{Recording, Second};
use super::timeline::{Timeline, histogram};

/// Why a request failed with a connection or I/O error: the keys of `error_kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// The connection was refused (or, for UDP, the port was unreachable).
    Refused,
    /// The server reset the connection before any reply arrived on it: refused in all but name.
    Reset,
    /// The server closed (or reset) the connection between replies, with a request outstanding.
    Closed,
    /// The connection ended (closed or reset) in the middle of a reply.
    Truncated,
    /// No route to the host or network.
    Unreachable,
    /// The TLS handshake failed (`tls://`).
    Tls,
    /// Any other I/O error.
    Other,
}

impl Failure {
    /// Every kind, in the order reports list them.
    pub const ALL: [Failure; 7] = [
        Failure::Refused,
        Failure::Reset,
        Failure::Closed,
        Failure::Truncated,
        Failure::Unreachable,
        Failure::Tls,
        Failure::Other,
    ];

    /// The kind's key in `error_kinds`.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Reset => "reset",
            Failure::Closed => "closed",
            Failure::Truncated => "truncated",
            Failure::Unreachable => "unreachable",
            Failure::Tls => "tls",
            Failure::Other => "other",
        }
    }

    /// What happened, for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Reset => "reset by the server before any reply",
            Failure::Closed => "closed by the server with a request unanswered",
            Failure::Truncated => "ended by the server in the middle of a reply",
            Failure::Unreachable => "unreachable",
            Failure::Tls => "TLS handshakes failed",
            Failure::Other => "other errors",
        }
    }

    /// Whether the server turned the connection away: a refusal, or a reset before any reply
    /// (exit code 4).
    pub fn is_refusal(self) -> bool {
        matches!(self, Failure::Refused | Failure::Reset)
    }

    pub(super) fn index(self) -> usize {
        Failure::ALL
            .iter()
            .position(|k| *k == self)
            .expect("listed")
    }
}

/// Live counters, shared by the workers and read by a progress display.
///
/// [`Counters::default`] keeps the run's latencies whole (the report's percentiles, exact): its
/// memory does not grow with the run's length. [`Counters::with_timeline`] (`--plot`) and
/// [`Counters::each_second`] (`--hdr-log`) keep the run over time too, still bounded.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered with the expected reply.
    pub ok: AtomicU64,
    /// Replies that differed from what was expected.
    pub mismatches: AtomicU64,
    /// Connection or I/O errors (refused, reset, closed early), by kind in `error_kinds`.
    pub errors: AtomicU64,
    /// Requests whose connection or reply did not come within the timeout (streams).
    pub timeouts: AtomicU64,
    /// Datagrams never answered within the timeout (UDP).
    pub losses: AtomicU64,
    /// Bytes written.
    pub bytes_sent: AtomicU64,
    /// Bytes read.
    pub bytes_received: AtomicU64,
    /// Connections open now (`idle`).
    pub open: AtomicU64,
    /// TLS handshakes completed (`tls://`).
    pub tls_handshakes: AtomicU64,
    /// The latencies and schedule lags the workers hand over as each of their seconds ends.
    histograms: Mutex<Histograms>,
    /// Each task's figures of its current second ([`Counters::slot`]), so that a second can
    /// be closed while a task waits (on a stalled server, on its schedule) with figures of it.
    slots: Mutex<Vec<Weak<Mutex<Slot>>>>,
    /// Where each second goes as it ends (`--hdr-log`), apart from `histograms` so that
    /// workers never wait on its writes.
    sink: Mutex<Option<Sink>>,
    /// `errors` by [`Failure`], in `Failure::ALL`'s order.
    pub(crate) kinds: [AtomicU64; Failure::ALL.len()],
    /// The first error's text.
    pub(crate) first_error: Mutex<Option<String>>,
    /// Failures of a connection that had answered exactly one request: a server that closes
    /// after one reply, as the slides' servers do.
    pub(crate) after_one_reply: AtomicU64,
    /// Mismatches whose reply is what the other `--expect` wants.
    pub(crate) other_expect: AtomicU64,
}

/// The run's histograms as the workers hand them over.
#[derive(Debug, Default)]
struct Histograms {
    /// Every latency of the run (ns): the report's percentiles.
    latency: Option<Histogram<u64>>,
    /// Every schedule lag of the run (ns, `--rate`).
    lag: Option<Histogram<u64>>,
    /// The run second by second, where a plot or a log asks for it.
    seconds: Option<Seconds>,
}

/// The run's seconds on their way to the timeline and the sink.
#[derive(Debug)]
struct Seconds {
    /// Seconds that have not ended, from `closed` on: a second's figures come from every task
    /// as it ends, so normally one or two.
    open: VecDeque<(Histogram<u64>, Histogram<u64>)>,
    /// How many seconds have ended (been closed).
    closed: u64,
    /// How many have been handed on: all that have ended, but for seconds without a figure
    /// at the run's start, held back until one has some (a run that times nothing has no
    /// seconds).
    handed: u64,
    /// Seconds closed but not yet given to the sink (which is written outside the lock).
    ready: Vec<(u64, Second)>,
    /// The plot's points, at most its cap.
    timeline: Option<Timeline>,
    /// Whether a sink takes the seconds (else `ready` stays empty).
    sink: bool,
}

/// Where each second goes as it ends: its number from the run's start and its figures.
type SinkFn = Box<dyn FnMut(u64, &Second) + Send>;

struct Sink(SinkFn);

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

/// One task's figures of its current second of the run.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The second of the run (from its start) the histograms hold.
    pub(crate) second: u64,
    /// Latencies in ns.
    pub(crate) latencies: Histogram<u64>,
    /// How late requests left against their intended send time, in ns (`--rate` only).
    pub(crate) lags: Histogram<u64>,
}

impl Counters {
    /// Keeps the run over time as well as whole, for a plot (`--plot`): at most `max_points`
    /// points ([`MAX_POINTS`](super::MAX_POINTS) for the CLI's), one a second while the run
    /// fits, then adjacent seconds added (2, 4, 8 ... s a point) so that a run of any length
    /// keeps at most that many. The report's [`Recording::seconds`] has them.
    pub fn with_timeline(self, max_points: usize) -> Counters {
        self.keeping_seconds(|seconds| seconds.timeline = Some(Timeline::new(max_points)))
    }

    /// Hands each second of the run to `sink` as it ends (`--hdr-log` writes it to the file):
    /// its number from the run's start and its figures, in order, one second long but for the
    /// run's last. Nothing is held for it once handed over; a run that times nothing hands
    /// none. [`bench::run`](super::run) calls `sink` from a thread of its own, once a second
    /// and at the run's end.
    pub fn each_second(mut self, sink: impl FnMut(u64, &Second) + Send + 'static) -> Counters {
        *self.sink.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(Sink(Box::new(sink)));
        self.keeping_seconds(|seconds| seconds.sink = true)
    }

    fn keeping_seconds(mut self, with: impl FnOnce(&mut Seconds)) -> Counters {
        let histograms = self.histograms.get_mut().unwrap_or_else(|e| e.into_inner());
        let seconds = histograms.seconds.get_or_insert_with(|| Seconds {
            open: VecDeque::new(),
            closed: 0,
            handed: 0,
            ready: Vec::new(),
            timeline: None,
            sink: false,
        });
        with(seconds);
        self
    }

    /// Whether the run is kept second by second (a timeline or a sink): then someone must
    /// [`Counters::close_before`] each second as it ends.
    pub(crate) fn keeps_seconds(&self) -> bool {
        self.lock_histograms().seconds.is_some()
    }

    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one failed request: its kind, and its text if it is the first.
    pub(crate) fn fail(&self, kind: Failure, text: impl FnOnce() -> String) {
        self.add(&self.kinds[kind.index()], 1);
        self.add(&self.errors, 1);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(text());
        }
    }

    fn lock_histograms(&self) -> MutexGuard<'_, Histograms> {
        self.histograms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A task's own figures of its current second, reachable by [`Counters::close_before`].
    pub(crate) fn slot(&self) -> Arc<Mutex<Slot>> {
        let slot = Arc::new(Mutex::new(Slot {
            second: 0,
            latencies: histogram(),
            lags: histogram(),
        }));
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|s| s.strong_count() > 0);
        slots.push(Arc::downgrade(&slot));
        slot
    }

    /// Hands a slot's figures to the run (the slot's lock held) and empties it.
    pub(crate) fn flush(&self, slot: &mut Slot) {
        self.merge(slot.second, &slot.latencies, &slot.lags);
        slot.latencies.reset();
        slot.lags.reset();
    }

    /// Merges one worker's latencies and schedule lags (nanoseconds) of second `second`.
    pub(crate) fn merge(&self, second: u64, latencies: &Histogram<u64>, lags: &Histogram<u64>) {
        if latencies.is_empty() && lags.is_empty() {
            return;
        }
        let mut histograms = self.lock_histograms();
        let Histograms {
            latency,
            lag,
            seconds,
        } = &mut *histograms;
        for (all, h) in [(latency, latencies), (lag, lags)] {
            if !h.is_empty() {
                super::recording::add_into(all, h);
            }
        }
        let Some(seconds) = seconds else { return };
        match second.checked_sub(seconds.closed) {
            Some(index) => {
                let index = index as usize;
                while seconds.open.len() <= index {
                    seconds.open.push_back((histogram(), histogram()));
                }
                let _ = seconds.open[index].0.add(latencies);
                let _ = seconds.open[index].1.add(lags);
            }
            // A second already closed: cannot happen in a run, whose tasks' figures are taken
            // before a second is closed; kept all the same, as a second interval of that
            // second (readers of a log add intervals up).
            None => seconds.hand(
                second,
                latencies.clone(),
                lags.clone(),
                Duration::from_secs(1),
            ),
        }
    }

    /// Closes every second before `now` (seconds from the run's start, read before this call):
    /// takes the tasks' figures of them, then hands them to the timeline and the sink. A task
    /// records later at a later time, so into a later second: none of these changes again.
    pub(crate) fn close_before(&self, now: u64) {
        let slots: Vec<Arc<Mutex<Slot>>> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for slot in slots {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.second < now {
                self.flush(&mut slot);
            }
        }
        let mut histograms = self.lock_histograms();
        if let Some(seconds) = &mut histograms.seconds {
            while seconds.closed < now {
                let (latency, lag) = seconds
                    .open
                    .pop_front()
                    .unwrap_or_else(|| (histogram(), histogram()));
                seconds.hand(seconds.closed, latency, lag, Duration::from_secs(1));
                seconds.closed += 1;
            }
        }
        drop(histograms);
        self.drain();
    }

    /// Gives the seconds closed so far to the sink, outside the histograms' lock.
    fn drain(&self) {
        let ready = match &mut self.lock_histograms().seconds {
            Some(seconds) => std::mem::take(&mut seconds.ready),
            None => return,
        };
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Sink(sink)) = &mut *sink {
            for (number, second) in &ready {
                sink(*number, second);
            }
        }
    }

    /// At the run's end, which came `elapsed` after its start (every task's figures merged):
    /// closes the seconds left, the last cut to the run's end, and returns the recording. The
    /// seconds without a reply at the end of a run that timed something (a server that
    /// stalled, every request timing out) are seconds of the run all the same: kept empty, so
    /// the plot and the log show the stall rather than a shorter run.
    pub(crate) fn finish(&self, elapsed: Duration) -> Recording {
        let mut histograms = self.lock_histograms();
        let Histograms {
            latency,
            lag,
            seconds,
        } = &mut *histograms;
        let (latency, lag) = (latency.take(), lag.take());
        let Some(seconds) = seconds else {
            return Recording::of(latency, lag, None);
        };
        let timed = seconds.handed > 0
            || seconds
                .open
                .iter()
                .any(|(l, g)| !(l.is_empty() && g.is_empty()));
        let mut end = seconds.closed + seconds.open.len() as u64;
        if timed {
            end = end.max(elapsed.as_secs());
        }
        while seconds.closed < end {
            let number = seconds.closed;
            let (l, g) = seconds
                .open
                .pop_front()
                .unwrap_or_else(|| (histogram(), histogram()));
            let length = if number + 1 == end {
                elapsed
                    .saturating_sub(Duration::from_secs(number))
                    .clamp(Duration::from_millis(1), Duration::from_secs(1))
            } else {
                Duration::from_secs(1)
            };
            seconds.hand(number, l, g, length);
            seconds.closed += 1;
        }
        let timeline = seconds.timeline.take();
        drop(histograms);
        self.drain();
        Recording::of(latency, lag, timeline)
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

impl Seconds {
    /// Hands second `number` on (the timeline, and the sink's queue), after the empty seconds
    /// held back before it; holds it back itself while no second had a figure.
    fn hand(
        &mut self,
        number: u64,
        latency: Histogram<u64>,
        lag: Histogram<u64>,
        length: Duration,
    ) {
        if self.handed == 0 && latency.is_empty() && lag.is_empty() {
            return;
        }
        while self.handed < number {
            let empty = Second {
                latency: histogram(),
                lag: histogram(),
                length: Duration::from_secs(1),
            };
            self.give(self.handed, empty);
            self.handed += 1;
        }
        self.give(
            number,
            Second {
                latency,
                lag,
                length,
            },
        );
        self.handed = self.handed.max(number + 1);
    }

    fn give(&mut self, number: u64, second: Second) {
        if let Some(timeline) = &mut self.timeline {
            timeline.add(
                number,
                1,
                Some(&second.latency),
                Some(&second.lag),
                second.length,
            );
        }
        if self.sink {
            self.ready.push((number, second));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::bench::timeline::MAX_POINTS;

    fn one(value: u64) -> Histogram<u64> {
        let mut h = histogram();
        h.record(value).unwrap();
        h
    }

    /// The seconds a sink was handed, as (number, latencies, lags, length).
    type Handed = Arc<Mutex<Vec<(u64, u64, u64, Duration)>>>;

    fn sink_into(handed: &Handed) -> impl FnMut(u64, &Second) + Send + 'static {
        let handed = handed.clone();
        move |number, second| {
            handed.lock().unwrap().push((
                number,
                second.latency.len(),
                second.lag.len(),
                second.length,
            ))
        }
    }

    fn open_seconds(counters: &Counters) -> usize {
        counters
            .lock_histograms()
            .seconds
            .as_ref()
            .map_or(0, |s| s.open.len() + s.ready.len())
    }

    #[test]
    fn a_run_without_a_plot_or_a_log_keeps_only_the_whole() {
        let counters = Counters::default();
        let (latency, lag) = (one(5_000), one(2_000));
        for second in 0..5_000 {
            counters.merge(second, &latency, &lag);
        }
        assert!(!counters.keeps_seconds());
        assert!(counters.lock_histograms().seconds.is_none());
        let recording = counters.finish(Duration::from_secs(5_000));
        assert!(recording.seconds.is_empty(), "no histogram per second");
        assert_eq!(
            recording.latency.unwrap().len(),
            5_000,
            "the whole is all there"
        );
        assert_eq!(recording.lag.unwrap().len(), 5_000);
    }

    #[test]
    fn a_long_run_for_a_plot_and_a_log_holds_a_bounded_number_of_seconds() {
        let handed = Handed::default();
        let counters = Counters::default()
            .with_timeline(MAX_POINTS)
            .each_second(sink_into(&handed));
        let slot = counters.slot();
        let seconds = 1_300u64; // past the cap twice: its points double in span twice
        for second in 0..seconds {
            // A task records in each second (its figures handed over as the next begins, or
            // taken by the closing), and another merges a second of its own.
            {
                let mut slot = slot.lock().unwrap();
                if slot.second != second {
                    counters.flush(&mut slot);
                    slot.second = second;
                }
                slot.latencies.record(5_000 + second).unwrap();
            }
            counters.merge(second, &one(7_000), &one(1_000));
            // As the closing thread would at each second's end, without waiting for one.
            counters.close_before(second + 1);
            assert_eq!(open_seconds(&counters), 0, "second {second} still held");
            let histograms = counters.lock_histograms();
            let seconds = histograms.seconds.as_ref().unwrap();
            assert!(seconds.timeline.as_ref().unwrap().len() <= MAX_POINTS);
        }
        let recording = counters.finish(Duration::from_millis(seconds * 1_000 - 500));
        assert!(recording.seconds.len() <= MAX_POINTS);
        assert_eq!(recording.interval, Duration::from_secs(4));
        let latencies: u64 = recording.seconds.iter().map(|s| s.latency.len()).sum();
        let lags: u64 = recording.seconds.iter().map(|s| s.lag.len()).sum();
        assert_eq!(
            (latencies, lags),
            (2 * seconds, seconds),
            "merged points keep every count"
        );
        // The summary is exact: every value, whatever the points.
        let whole = recording.latency.unwrap();
        assert_eq!(whole.len(), 2 * seconds);
        assert_eq!(whole.count_between(5_000, 5_000 + seconds - 1), seconds);
        assert_eq!(whole.count_at(7_000), seconds);
        // The log got every second once, in order, with its own figures.
        let handed = handed.lock().unwrap();
        assert_eq!(handed.len() as u64, seconds);
        assert!(handed.iter().enumerate().all(|(i, s)| s.0 == i as u64
            && (s.1, s.2) == (2, 1)
            && s.3 == Duration::from_secs(1)));
    }

    #[test]
    fn closing_a_second_takes_the_figures_of_a_task_that_waits() {
        let handed = Handed::default();
        let counters = Counters::default().each_second(sink_into(&handed));
        let slot = counters.slot();
        slot.lock().unwrap().latencies.record(5_000).unwrap();
        // The task waits (a stalled server) while seconds 0, 1 and 2 end.
        counters.close_before(3);
        assert_eq!(
            *handed.lock().unwrap(),
            [
                (0, 1, 0, Duration::from_secs(1)),
                (1, 0, 0, Duration::from_secs(1)),
                (2, 0, 0, Duration::from_secs(1))
            ]
        );
        assert!(slot.lock().unwrap().latencies.is_empty());
    }

    #[test]
    fn seconds_without_a_reply_at_the_end_of_a_run_are_kept_empty() {
        let handed = Handed::default();
        let counters = Counters::default()
            .with_timeline(MAX_POINTS)
            .each_second(sink_into(&handed));
        // Replies in the first 2 s of a 5.0004 s run, none after: the server stalled.
        counters.merge(0, &one(5_000), &histogram());
        counters.merge(1, &one(5_000), &histogram());
        let recording = counters.finish(Duration::from_micros(5_000_400));
        assert_eq!(recording.seconds.len(), 5, "the stalled seconds are shown");
        assert!(recording.seconds[2..].iter().all(|s| s.latency.is_empty()));
        assert_eq!(recording.seconds[4].length, Duration::from_secs(1));
        assert_eq!(recording.latency.unwrap().len(), 2);
        assert_eq!(handed.lock().unwrap().len(), 5);
        // A run that timed nothing (stream mode, a server that refused) has no seconds.
        let handed = Handed::default();
        let counters = Counters::default()
            .with_timeline(MAX_POINTS)
            .each_second(sink_into(&handed));
        counters.close_before(3);
        assert!(counters.finish(Duration::from_secs(5)).seconds.is_empty());
        assert!(handed.lock().unwrap().is_empty());
    }

    #[test]
    fn a_run_that_starts_answering_late_shows_its_silent_start() {
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        let counters = Counters::default()
            .with_timeline(MAX_POINTS)
            .each_second(move |_, _| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        counters.close_before(2); // nothing yet: held back
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        counters.merge(2, &one(5_000), &histogram());
        counters.close_before(3);
        assert_eq!(
            calls.load(Ordering::Relaxed),
            3,
            "seconds 0 and 1, empty, then 2"
        );
        // The run ends 0.5 s into second 3, without a reply in it: shown to its last whole
        // second, as a stall at the end is.
        let recording = counters.finish(Duration::from_millis(3_500));
        assert_eq!(recording.seconds.len(), 3);
        assert_eq!(recording.seconds[2].latency.len(), 1);
    }
}
