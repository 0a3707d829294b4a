//! The listeners' counters ([`crate::stats`]) as Prometheus metric families, read at each
//! scrape: the engines only ever touch their atomics, and prometheus-client's encoder writes
//! the text (names, `_total`, escaping, `le` buckets).

use std::collections::HashMap;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::stats::{DURATION_BUCKETS, DropReason, EndCause, Refusal, Snapshot, Stats};

/// Labels of one sample: `service`, `listener`, and perhaps one more.
type Labels = Vec<(&'static str, String)>;

/// Encodes every registered listener's counters.
#[derive(Debug)]
pub(super) struct StatsCollector {
    pub(super) stats: Stats,
}

/// Which listeners a family covers.
#[derive(Clone, Copy)]
enum Of {
    Streams,
    Datagrams,
    Both,
}

/// A counter family (the encoder appends `_total` to `name`).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    rows: Vec<(Labels, u64)>,
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // Each family covers the listeners it concerns: connections the stream listeners,
        // datagrams the datagram listeners, bytes and requests both.
        let all: Vec<(bool, Labels, Snapshot)> = self
            .stats
            .listeners()
            .iter()
            .map(|l| {
                let labels = vec![
                    ("service", l.service().to_string()),
                    ("listener", l.listener().to_string()),
                ];
                (l.is_stream(), labels, l.snapshot())
            })
            .collect();
        let of = |kind: Of| {
            all.iter()
                .filter(move |(stream, ..)| match kind {
                    Of::Streams => *stream,
                    Of::Datagrams => !*stream,
                    Of::Both => true,
                })
                .map(|(_, labels, s)| (labels, s))
        };
        let simple = |kind: Of, name, help, value: fn(&Snapshot) -> u64| Family {
            name,
            help,
            kind: MetricType::Counter,
            rows: of(kind)
                .map(|(labels, s)| (labels.clone(), value(s)))
                .collect(),
        };
        let by = |kind: Of,
                  name,
                  help,
                  label: &'static str,
                  values: &dyn Fn(&Snapshot) -> Vec<(&'static str, u64)>| {
            let mut rows = Vec::new();
            for (labels, s) in of(kind) {
                for (value_label, value) in values(s) {
                    let mut labels = labels.clone();
                    labels.push((label, value_label.to_string()));
                    rows.push((labels, value));
                }
            }
            Family {
                name,
                help,
                kind: MetricType::Counter,
                rows,
            }
        };
        let families = [
            simple(
                Of::Streams,
                "socketkit_connections_accepted",
                "Stream connections accepted and served (refused ones not included)",
                |s| s.connections_accepted,
            ),
            by(
                Of::Streams,
                "socketkit_connections_refused",
                "Stream connections refused before a byte was read, by reason",
                "reason",
                &|s| {
                    let counts = s.connections_refused;
                    Refusal::ALL
                        .iter()
                        .map(|r| (r.label(), counts[*r as usize]))
                        .collect()
                },
            ),
            simple(
                Of::Streams,
                "socketkit_connection_limit_reached",
                "Times every --max-connections slot was taken when the listener would accept; \
                 new clients then wait in the listen queue (none is refused at the limit)",
                |s| s.connection_limit_reached,
            ),
            by(
                Of::Streams,
                "socketkit_connection_ends",
                "Stream connections ended, by cause",
                "cause",
                &|s| {
                    let counts = s.connection_ends;
                    EndCause::ALL
                        .iter()
                        .map(|c| (c.label(), counts[*c as usize]))
                        .collect()
                },
            ),
            simple(
                Of::Both,
                "socketkit_requests",
                "Replies given on stream connections that have ended (each read the service \
                 answered), plus datagrams answered",
                |s| s.requests + s.datagrams_answered,
            ),
            simple(
                Of::Both,
                "socketkit_received_bytes",
                "Bytes received from peers (a stream's once it ends, datagrams as they come)",
                |s| s.bytes_in,
            ),
            simple(
                Of::Both,
                "socketkit_sent_bytes",
                "Bytes sent to peers (a stream's once it ends, datagrams as they go)",
                |s| s.bytes_out,
            ),
            simple(
                Of::Datagrams,
                "socketkit_datagrams_received",
                "Datagrams received",
                |s| s.datagrams_received,
            ),
            simple(
                Of::Datagrams,
                "socketkit_datagrams_answered",
                "Datagrams answered with a reply sent",
                |s| s.datagrams_answered,
            ),
            by(
                Of::Datagrams,
                "socketkit_datagrams_dropped",
                "Datagrams or replies dropped, by reason",
                "reason",
                &|s| {
                    let counts = s.datagrams_dropped;
                    DropReason::ALL
                        .iter()
                        .map(|r| (r.label(), counts[*r as usize]))
                        .collect()
                },
            ),
            simple(
                Of::Both,
                "socketkit_handler_errors",
                "Errors of services and handlers reported to handle_error (not panics)",
                |s| s.handler_errors,
            ),
            simple(
                Of::Both,
                "socketkit_handler_panics",
                "Panics of services and handlers (each caught; serving went on)",
                |s| s.handler_panics,
            ),
        ];
        for family in families {
            let metric = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            let mut metric = metric;
            for (labels, value) in &family.rows {
                metric
                    .encode_family(labels)?
                    .encode_counter::<NoLabelSet, _, u64>(value, None)?;
            }
        }
        let mut active = encoder.encode_descriptor(
            "socketkit_connections_active",
            "Stream connections open now",
            None,
            MetricType::Gauge,
        )?;
        for (labels, s) in of(Of::Streams) {
            active
                .encode_family(labels)?
                .encode_gauge(&s.connections_active)?;
        }
        let mut durations = encoder.encode_descriptor(
            "socketkit_connection_duration_seconds",
            "How long stream connections lasted, from accept to end",
            None,
            MetricType::Histogram,
        )?;
        for (labels, s) in of(Of::Streams) {
            // The snapshot's buckets are cumulative; the encoder wants each bucket's own count
            // (it adds them up, and writes +Inf from `count`).
            let mut below = 0;
            let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
                .iter()
                .zip(s.duration_buckets)
                .map(|(&bound, cumulative)| {
                    (
                        bound,
                        cumulative - std::mem::replace(&mut below, cumulative),
                    )
                })
                .collect();
            let count = s.duration_buckets[DURATION_BUCKETS.len()];
            durations
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(
                    s.duration_seconds,
                    count,
                    &buckets,
                    None::<&HashMap<_, _>>,
                )?;
        }
        Ok(())
    }
}
