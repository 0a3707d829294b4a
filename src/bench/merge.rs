//! Several runs (from several machines, or one after another) added into one report: counts
//! summed, histograms added, percentiles read from the sum. Percentiles are never averaged:
//! the mean of two p99s is no run's p99.

use super::report::Report;

impl Report {
    /// The run parameters in which `other` differs from this run, as `name a ≠ b` texts; empty
    /// when they may be merged without `--force`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use socketkit::bench::{self, Counters, Plan};
    /// # use socketkit::Server;
    /// # let server = Server::builder().listen("tcp://127.0.0.1:0".parse()?).bind()?;
    /// # let mut plan = Plan::new(server.local_endpoints()[0].clone());
    /// # plan.requests = Some(20);
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let a = bench::run(&plan, Arc::new(Counters::default()))?;
    /// plan.size = 128;
    /// let b = bench::run(&plan, Arc::new(Counters::default()))?;
    /// assert_eq!(a.differences(&b), ["size 64 ≠ 128"]);
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn differences(&self, other: &Report) -> Vec<String> {
        let rate = |r: Option<f64>| r.map_or("none".to_string(), |r| format!("{r}/s"));
        [
            (
                "mode",
                self.mode.name().to_string(),
                other.mode.name().to_string(),
            ),
            ("endpoint", self.endpoint.clone(), other.endpoint.clone()),
            (
                "connections",
                self.connections.to_string(),
                other.connections.to_string(),
            ),
            ("size", self.size.to_string(), other.size.to_string()),
            (
                "pipeline",
                self.pipeline.to_string(),
                other.pipeline.to_string(),
            ),
            ("rate", rate(self.rate), rate(other.rate)),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name} {a} ≠ {b}"))
        .collect()
    }

    /// Adds `runs` into one report, taken to have run at the same time against one server (a
    /// load from several machines): counts, bytes, CPU time, connections and rates are summed,
    /// the elapsed time is the longest run's, the histograms are added (second by second too)
    /// and the percentiles read from the sum. The parameters are the first run's where they
    /// differ (check [`Report::differences`] first). `None` for no runs.
    pub fn merge(runs: &[Report]) -> Option<Report> {
        let (first, rest) = runs.split_first()?;
        let mut all = first.clone();
        for run in rest {
            all.connections += run.connections;
            all.rate = match (all.rate, run.rate) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            all.elapsed = all.elapsed.max(run.elapsed);
            all.ok += run.ok;
            all.mismatches += run.mismatches;
            all.errors += run.errors;
            for (kind, n) in &run.error_kinds {
                match all.error_kinds.iter_mut().find(|(k, _)| k == kind) {
                    Some((_, total)) => *total += n,
                    None => all.error_kinds.push((*kind, *n)),
                }
            }
            all.first_error = all.first_error.or_else(|| run.first_error.clone());
            all.timeouts += run.timeouts;
            all.losses += run.losses;
            all.bytes_sent += run.bytes_sent;
            all.bytes_received += run.bytes_received;
            all.held += run.held;
            all.tls_handshakes += run.tls_handshakes;
            all.own_cpu = match (all.own_cpu, run.own_cpu) {
                (Some(a), Some(b)) => Some(super::report::CpuTime {
                    user: a.user + b.user,
                    system: a.system + b.system,
                }),
                _ => None,
            };
            all.recording.add(&run.recording);
        }
        all.error_kinds
            .sort_by_key(|(kind, _)| super::counters::Failure::ALL.iter().position(|k| k == kind));
        // A hint read from one run's failures need not fit the sum.
        all.hint = all.hint.filter(|_| rest.is_empty());
        all.latency = all.recording.latency_percentiles();
        all.schedule_lag = all.recording.lag_percentiles();
        Some(all)
    }
}
