//! `socketkit ping`: ICMP echo, printed as iputils `ping` prints it (or as NDJSON with --json).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use socketkit::ping::{self, Event, Family, PingOptions, Pinger, Reply, Summary};

use crate::cli::PingArgs;

/// How long the name look-up may take before the command gives up (exit 5).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: PingArgs, quiet: bool) -> anyhow::Result<()> {
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => Some(Family::V4),
        (_, true) => Some(Family::V6),
        _ => None,
    };
    let host = args.host.clone();
    let target =
        socketkit::names::with_timeout(LOOKUP_TIMEOUT, move || ping::target(&host, family))?;
    let mut options = PingOptions::default();
    options.count = args.count;
    options.interval = args.interval;
    options.timeout = args.timeout;
    options.deadline = args.deadline;
    options.size = args.size;
    // Handlers before the socket: a signal from then on prints the summary, as in iputils.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    let mut pinger = Pinger::open(target, options)?;
    let mut out = io::stdout().lock();
    let mut printer = Printer {
        numeric: args.numeric || args.host.parse::<IpAddr>().is_ok(),
        names: HashMap::new(),
    };
    if !args.json {
        let header = match target {
            IpAddr::V4(_) => format!(
                "PING {} ({target}) {}({}) bytes of data.",
                args.host,
                args.size,
                args.size + 28
            ),
            IpAddr::V6(_) => format!("PING {}({target}) {} data bytes", args.host, args.size),
        };
        writeln!(out, "{header}")?;
    }
    let mut failed_write = None;
    let summary = pinger.run(&stop, |event| {
        let written = if args.json {
            writeln!(out, "{}", event_json(event))
        } else if quiet {
            Ok(())
        } else {
            printer.write_event(&mut out, event)
        };
        if let Err(e) = written {
            failed_write.get_or_insert(e);
        }
    })?;
    if let Some(e) = failed_write {
        return Err(e.into());
    }
    if args.json {
        writeln!(
            out,
            "{}",
            summary_json(&args.host, target, &pinger, &summary)
        )?;
    } else {
        writeln!(out)?;
        writeln!(out, "--- {} ping statistics ---", args.host)?;
        writeln!(out, "{}", summary.counts_line())?;
        // iputils ends the summary with a line break of its own: an empty line without rtt.
        match summary.rtt {
            Some(rtt) => writeln!(out, "{}", rtt.line())?,
            None => writeln!(out)?,
        }
    }
    out.flush()?;
    if summary.received == 0 {
        return Err(socketkit::Error::TimedOut {
            what: "an echo reply",
            after: Duration::from_millis(summary.elapsed.as_millis() as u64),
        }
        .into());
    }
    Ok(())
}

/// The text lines of replies and errors, iputils' shapes.
struct Printer {
    /// Print addresses only: -n, or the target was given as an address.
    numeric: bool,
    /// Reverse look-ups done so far (a name, or `None` when the address has none).
    names: HashMap<IpAddr, Option<String>>,
}

impl Printer {
    fn write_event(&mut self, out: &mut impl Write, event: &Event) -> io::Result<()> {
        match event {
            Event::Reply(reply) => self.write_reply(out, reply, ""),
            Event::Duplicate(reply) => self.write_reply(out, reply, " (DUP!)"),
            Event::Late(reply) => self.write_reply(out, reply, " (LATE!)"),
            Event::Error {
                from: Some(from),
                seq,
                message,
            } => writeln!(out, "From {} icmp_seq={seq} {message}", self.who(*from)),
            Event::Error {
                from: None,
                seq,
                message,
            } => {
                // iputils' "ping: sendmsg: ..." goes to stderr too.
                let _ = writeln!(io::stderr(), "socketkit: ping: icmp_seq={seq}: {message}");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn write_reply(&mut self, out: &mut impl Write, reply: &Reply, mark: &str) -> io::Result<()> {
        let ttl = reply.ttl.map(|t| format!(" ttl={t}")).unwrap_or_default();
        writeln!(
            out,
            "{} bytes from {}: icmp_seq={}{ttl} time={} ms{mark}",
            reply.bytes,
            self.who(reply.from),
            reply.seq,
            ping::reply_time(reply.rtt)
        )
    }

    /// `NAME (ADDRESS)` as iputils prints a peer when the target was a name, else `ADDRESS`.
    fn who(&mut self, address: IpAddr) -> String {
        if self.numeric {
            return address.to_string();
        }
        let name = self.names.entry(address).or_insert_with(|| {
            socketkit::names::with_timeout(LOOKUP_TIMEOUT, move || {
                socketkit::names::host_by_addr(address)
            })
            .ok()
            .map(|entry| entry.name)
        });
        match name {
            Some(name) => format!("{name} ({address})"),
            None => address.to_string(),
        }
    }
}

fn reply_json(kind: &str, reply: &Reply) -> serde_json::Value {
    serde_json::json!({
        "type": kind,
        "from": reply.from.to_string(),
        "bytes": reply.bytes,
        "seq": reply.seq,
        "ttl": reply.ttl,
        "time_ms": time_ms(reply.rtt),
    })
}

/// A reply's `time_ms`: the number its text line prints (`time=1.23 ms`), so the two agree.
fn time_ms(rtt: Duration) -> f64 {
    let text = ping::reply_time(rtt);
    text.parse()
        .unwrap_or_else(|_| unreachable!("reply_time printed {text:?}"))
}

fn event_json(event: &Event) -> serde_json::Value {
    match event {
        Event::Reply(reply) => reply_json("reply", reply),
        Event::Duplicate(reply) => reply_json("duplicate", reply),
        Event::Late(reply) => reply_json("late", reply),
        Event::Error { from, seq, message } => serde_json::json!({
            "type": "error",
            "from": from.map(|f| f.to_string()),
            "seq": seq,
            "message": message,
        }),
        _ => serde_json::json!({ "type": "unknown" }),
    }
}

fn summary_json(host: &str, target: IpAddr, pinger: &Pinger, s: &Summary) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    serde_json::json!({
        "type": "summary",
        "host": host,
        "address": target.to_string(),
        "socket": pinger.socket_kind().name(),
        "transmitted": s.transmitted,
        "received": s.received,
        "duplicates": s.duplicates,
        "late": s.late,
        "errors": s.errors,
        "loss_percent": ping::loss_value(s.transmitted, s.received),
        "time_ms": s.elapsed.as_millis() as u64,
        "rtt_ms": s.rtt.map(|r| serde_json::json!({
            "min": ms(r.min_us),
            "avg": ms(r.avg_us),
            "max": ms(r.max_us),
            "mdev": ms(r.mdev_us),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON's time_ms is the text's `time=`: rounded the same way (1.2345 ms is 1.23 in both;
    /// truncated it was 1.234).
    #[test]
    fn json_time_is_the_number_the_text_prints() {
        for (us, text) in [
            (45, "0.045"),
            (1_234, "1.23"),
            (1_235, "1.24"),
            (12_345, "12.3"),
        ] {
            let rtt = Duration::from_micros(us) + Duration::from_nanos(500);
            assert_eq!(ping::reply_time(rtt), text);
            assert_eq!(time_ms(rtt), text.parse::<f64>().unwrap(), "{us} us");
        }
    }
}
