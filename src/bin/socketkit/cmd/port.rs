//! `socketkit port`: well-known ports by name or number.

use std::io::{self, Write};

use socketkit::names::{self, Protocol, ServiceEntry, Source};

use crate::cli::{PortArgs, PortQuery};

pub fn run(args: PortArgs) -> anyhow::Result<()> {
    let protocol = if args.udp {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    let (query, entry) = match &args.service {
        PortQuery::Name(name) => (name.clone(), names::service_by_name(name, protocol)?),
        PortQuery::Number(port) => (port.to_string(), names::service_by_port(*port, protocol)?),
    };
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json(&query, &entry))?;
    } else {
        writeln!(out, "{}", line(&entry))?;
    }
    Ok(())
}

fn json(query: &str, entry: &ServiceEntry) -> serde_json::Value {
    serde_json::json!({
        "query": query,
        "name": entry.name,
        "port": entry.port,
        "protocol": entry.protocol.name(),
        "aliases": entry.aliases,
        "source": entry.source.name(),
    })
}

/// A services(5) line: `http 80/tcp www`, with a comment when the answer is socketkit's own.
fn line(entry: &ServiceEntry) -> String {
    let mut line = format!("{} {}/{}", entry.name, entry.port, entry.protocol);
    for alias in &entry.aliases {
        line.push(' ');
        line.push_str(alias);
    }
    if entry.source == Source::BuiltIn {
        line.push_str(" # built-in table");
    }
    line
}
