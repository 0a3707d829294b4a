//! A `bench --json` line read back into a [`Report`], histograms included, for
//! `socketkit report`.

use std::time::Duration;

use serde_json::Value;

use super::counters::Failure;
use super::plan::Mode;
use super::recording::{Recording, decode};
use super::report::{CpuTime, Report};

impl Report {
    /// Reads what [`Report::to_json`] wrote. The percentiles are recomputed from the encoded
    /// histograms (`latency_histogram`, `schedule_lag_histogram`), never taken from the text.
    ///
    /// # Errors
    ///
    /// A one-line reason naming the field that is missing or wrong; a run with latencies but
    /// no `latency_histogram` (written by a socketkit without the `hdr-log` feature) is one.
    pub fn from_json(value: &Value) -> Result<Report, String> {
        Report::from_fields(value, true)
    }

    /// [`Report::from_json`]; an HDR log's run line has no histograms (its intervals do), so
    /// `histograms` says whether they must be there.
    pub(crate) fn from_fields(value: &Value, histograms: bool) -> Result<Report, String> {
        let field = |name: &str| field(value, name);
        let count = |name: &str| count(value, name);
        let parameters = Parameters::of(value)?;
        let seconds = |name: &str| {
            field(name)
                .and_then(Value::as_f64)
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
                .map(Duration::from_secs_f64)
        };
        let histogram = |name: &str| {
            field(name)
                .map(|v| {
                    let text = v
                        .as_str()
                        .ok_or_else(|| format!("the field {name:?} is not text"))?;
                    decode(text).map_err(|e| format!("{name}: {e}"))
                })
                .transpose()
        };
        let mut error_kinds = Vec::new();
        if let Some(kinds) = field("error_kinds").and_then(Value::as_object) {
            for kind in Failure::ALL {
                if let Some(n) = kinds.get(kind.name()).and_then(Value::as_u64) {
                    error_kinds.push((kind, n));
                }
            }
        }
        let recording = Recording::of(
            histogram("latency_histogram")?,
            histogram("schedule_lag_histogram")?,
            None,
        );
        if histograms && recording.latency.is_none() && field("latency_us").is_some() {
            return Err(
                "the run has latencies but no \"latency_histogram\" to add up (percentiles \
                 cannot be merged): rerun bench with the hdr-log feature"
                    .into(),
            );
        }
        let own_cpu = match (seconds("own_cpu_user_s"), seconds("own_cpu_system_s")) {
            (Some(user), Some(system)) => Some(CpuTime { user, system }),
            _ => None,
        };
        Ok(Report {
            mode: parameters.mode,
            // Runs from before the field were all on the async engine.
            engine: field("engine")
                .and_then(Value::as_str)
                .and_then(|name| name.parse().ok())
                .unwrap_or_default(),
            endpoint: parameters.endpoint,
            connections: parameters.connections,
            size: parameters.size,
            pipeline: parameters.pipeline,
            rate: parameters.rate,
            elapsed: seconds("elapsed_s").ok_or("the field \"elapsed_s\" is missing or wrong")?,
            ok: count("ok")?,
            mismatches: count("mismatches")?,
            errors: count("errors")?,
            error_kinds,
            first_error: field("first_error")
                .and_then(Value::as_str)
                .map(str::to_string),
            timeouts: count("timeouts")?,
            losses: count("losses")?,
            bytes_sent: count("bytes_sent")?,
            bytes_received: count("bytes_received")?,
            held: count("held")?,
            // Absent from a run written before TLS (or by a build without it): none.
            tls_handshakes: field("tls_handshakes").and_then(Value::as_u64).unwrap_or(0),
            latency: recording.latency_percentiles(),
            schedule_lag: recording.lag_percentiles(),
            hint: field("hint").and_then(Value::as_str).map(str::to_string),
            own_cpu,
            recording,
        })
    }
}

/// A run's parameters: the fields of a report that say how it ran (an HDR log's first line).
pub(crate) struct Parameters {
    mode: Mode,
    endpoint: String,
    connections: usize,
    size: usize,
    pipeline: usize,
    rate: Option<f64>,
}

impl Parameters {
    /// Reads them from a report's fields.
    ///
    /// # Errors
    ///
    /// A one-line reason naming the field that is missing or wrong.
    pub(crate) fn of(value: &Value) -> Result<Parameters, String> {
        let text = |name: &str| {
            field(value, name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("the field {name:?} is missing or not text"))
        };
        let size = |name: &str| {
            usize::try_from(count(value, name)?).map_err(|_| "a count is too large".to_string())
        };
        Ok(Parameters {
            mode: text("mode")?.parse()?,
            endpoint: text("endpoint")?.to_string(),
            connections: size("connections")?,
            size: size("size")?,
            pipeline: size("pipeline")?,
            rate: field(value, "rate").and_then(Value::as_f64),
        })
    }
}

/// The field `name`, unless it is missing or null.
fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value.get(name).filter(|v| !v.is_null())
}

/// The count `name`.
fn count(value: &Value, name: &str) -> Result<u64, String> {
    field(value, name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("the field {name:?} is missing or not a count"))
}
