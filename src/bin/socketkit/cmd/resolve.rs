//! `socketkit resolve`: forward and reverse look-ups and getfqdn, through the system resolver.

use std::io::{self, Write};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use socketkit::names::{self, HostEntry, IpAddress};

use crate::cli::ResolveArgs;

/// One answer, as printed.
enum Answer {
    Forward(HostEntry),
    Reverse(HostEntry),
    Fqdn(String),
}

pub fn run(args: ResolveArgs) -> anyhow::Result<()> {
    let queries = if args.names.is_empty() {
        vec![String::new()] // only with --fqdn (clap requires a name otherwise): this host
    } else {
        args.names
    };
    let mut out = io::stdout().lock();
    let mut failed: Option<anyhow::Error> = None;
    let mut printed = false;
    for query in &queries {
        match answer(query, args.fqdn, args.timeout) {
            Ok(answer) => {
                if args.json {
                    writeln!(out, "{}", json(query, &answer))?;
                } else {
                    if printed && !args.fqdn {
                        writeln!(out)?; // a blank line between two answers' blocks
                    }
                    write_text(&mut out, query, &answer)?;
                }
                printed = true;
            }
            Err(error) => {
                // Each failure gets its line; the last one is main's, and sets the exit code.
                if let Some(earlier) = failed.replace(error) {
                    // Not eprintln!: a closed stderr must not panic.
                    let _ = writeln!(io::stderr(), "socketkit: error: {earlier:#}");
                }
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

fn answer(query: &str, fqdn: bool, timeout: Duration) -> anyhow::Result<Answer> {
    if query.is_empty() && !fqdn {
        return Err(socketkit::Error::BadAddress {
            text: String::new(),
            reason: "empty name (for this host's name, use --fqdn without NAME)".into(),
        }
        .into());
    }
    let owned = query.to_string();
    let result = if fqdn {
        names::with_timeout(timeout, move || names::fqdn(&owned)).map(Answer::Fqdn)
    } else if is_address(query) {
        let address: IpAddress = query.parse()?;
        names::with_timeout(timeout, move || names::host_by_addr(address.ip())).map(Answer::Reverse)
    } else {
        names::with_timeout(timeout, move || names::lookup(&owned)).map(Answer::Forward)
    };
    match result {
        Err(error @ socketkit::Error::TimedOut { .. }) => {
            let what = if query.is_empty() { "this host" } else { query };
            Err(error).with_context(|| format!("looking up {what}"))
        }
        other => Ok(other?),
    }
}

/// Address text in `inet_pton`'s strict forms (plus an IPv6 `%zone`) is looked up in reverse,
/// as Python's `gethostbyaddr` reads it without a name look-up. `127.1` is a name here, which
/// `getaddrinfo` reads as 127.0.0.1, as `gethostbyname_ex('127.1')` does.
fn is_address(text: &str) -> bool {
    match text.split_once('%') {
        Some((ip, _)) => ip.parse::<std::net::Ipv6Addr>().is_ok(),
        None => text.parse::<IpAddr>().is_ok(),
    }
}

fn json(query: &str, answer: &Answer) -> serde_json::Value {
    let entry = |kind: &str, e: &HostEntry| {
        let addresses: Vec<String> = e.addresses.iter().map(IpAddr::to_string).collect();
        serde_json::json!({
            "query": query,
            "type": kind,
            "name": e.name,
            "aliases": e.aliases,
            "addresses": addresses,
        })
    };
    match answer {
        Answer::Forward(e) => entry("forward", e),
        Answer::Reverse(e) => entry("reverse", e),
        Answer::Fqdn(name) => serde_json::json!({ "query": query, "type": "fqdn", "name": name }),
    }
}

/// Forward and reverse: `KEY VALUE` lines, one per alias and per address, so they grep well;
/// fqdn: the name alone, like `hostname -f`.
fn write_text(out: &mut impl Write, query: &str, answer: &Answer) -> io::Result<()> {
    let entry = match answer {
        Answer::Fqdn(name) => return writeln!(out, "{name}"),
        Answer::Forward(e) | Answer::Reverse(e) => e,
    };
    writeln!(out, "query    {query}")?;
    writeln!(out, "name     {}", entry.name)?;
    for alias in &entry.aliases {
        writeln!(out, "alias    {alias}")?;
    }
    for address in &entry.addresses {
        writeln!(out, "address  {address}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_address_text_is_looked_up_in_reverse() {
        assert!(is_address("127.0.0.1"));
        assert!(is_address("::1"));
        assert!(is_address("fe80::1%lo"));
        assert!(!is_address("127.1")); // getaddrinfo reads it, as a name
        assert!(!is_address("localhost"));
        assert!(!is_address("127.0.0.1%lo"));
    }
}
