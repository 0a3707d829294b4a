//! The standard `process_*` metrics (the names every Prometheus client library exports), read
//! at each scrape from the kernel.
//!
//! Written here because prometheus-client 0.26 has no process collector (its README: "No
//! process metrics"; the `prometheus` crate has one, but only for its own registry type), and
//! the `procfs` crate would be a large dependency for six numbers: CPU time from
//! `getrusage`, memory and threads from `/proc/self/status`, descriptors from `/proc/self/fd`
//! and `RLIMIT_NOFILE`, the start time from `/proc/self/stat` and the boot time.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Encodes the process metrics at each scrape. A value that cannot be read is left out.
#[derive(Debug, Default)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        if let Some(cpu) = cpu_seconds() {
            let metric = ConstCounter::new(cpu);
            let help = "Total user and system CPU time spent in seconds";
            let e = encoder.encode_descriptor(
                "process_cpu_seconds",
                help,
                None,
                metric.metric_type(),
            )?;
            metric.encode(e)?;
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                status_kib(&status, "VmRSS:").map(|k| k * 1024),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                status_kib(&status, "VmSize:").map(|k| k * 1024),
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                status_kib(&status, "Threads:"),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                open_fds(),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                max_fds(),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value.and_then(|v| i64::try_from(v).ok()) {
                gauge(&mut encoder, name, help, value)?;
            }
        }
        if let Some(start) = start_time_seconds() {
            let metric = ConstGauge::new(start);
            let help = "Start time of the process since unix epoch in seconds";
            let e = encoder.encode_descriptor(
                "process_start_time_seconds",
                help,
                None,
                MetricType::Gauge,
            )?;
            metric.encode(e)?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// User plus system CPU time of every thread, in seconds.
fn cpu_seconds() -> Option<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// A `/proc/self/status` field's number (`VmRSS:     1234 kB` gives 1234).
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn open_fds() -> Option<u64> {
    // The directory's own descriptor, open while it is read, is one of the entries.
    let count = std::fs::read_dir("/proc/self/fd").ok()?.count();
    u64::try_from(count.saturating_sub(1)).ok()
}

fn max_fds() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// When the process started, in seconds since the epoch: its start in clock ticks after boot
/// (`/proc/self/stat`, field 22) plus the boot time (`btime` in `/proc/stat`).
fn start_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(boot as f64 + ticks as f64 / per_second as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_sensibly() {
        assert!(cpu_seconds().is_some());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status_kib(&status, "VmRSS:").unwrap() > 0);
        assert!(status_kib(&status, "Threads:").unwrap() >= 1);
        let fds = open_fds().unwrap();
        assert!(fds >= 3 && fds <= max_fds().unwrap(), "{fds}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = start_time_seconds().unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }
}
