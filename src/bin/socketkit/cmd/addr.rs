//! `socketkit addr`: one address in every form the slides show.

use std::io::{self, Write};
use std::net::IpAddr;

use socketkit::names::IpAddress;

use crate::cli::AddrArgs;

pub fn run(args: AddrArgs) -> anyhow::Result<()> {
    let (input, address) = match (&args.packed, &args.value) {
        (Some(hex), _) => (hex.as_str(), IpAddress::from_packed_hex(hex)?),
        (None, Some(text)) => (text.as_str(), text.parse::<IpAddress>()?),
        (None, None) => unreachable!("clap requires VALUE or --packed"),
    };
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json(input, &address))?;
    } else {
        write_text(&mut out, &address)?;
    }
    Ok(())
}

fn json(input: &str, address: &IpAddress) -> serde_json::Value {
    serde_json::json!({
        "input": input,
        "family": if address.ip().is_ipv4() { "ipv4" } else { "ipv6" },
        "address": address.ip().to_string(),
        "scope_id": address.scope_id(),
        "packed": hex(&address.packed(), ""),
        "network_order": address.network_order(),
        "host_order": address.host_order(),
        "ipv4": address.ipv4().map(|v4| v4.to_string()),
        "ipv4_mapped": address.ipv4_mapped().map(|v6| v6.to_string()),
    })
}

fn write_text(out: &mut impl Write, address: &IpAddress) -> io::Result<()> {
    writeln!(out, "address        {}", address.ip())?;
    match address.ip() {
        IpAddr::V4(_) => writeln!(out, "family         IPv4")?,
        IpAddr::V6(_) => writeln!(out, "family         IPv6")?,
    }
    if let Some(scope) = address.scope_id() {
        writeln!(out, "scope id       {scope}")?;
    }
    writeln!(out, "packed         {}", hex(&address.packed(), " "))?;
    if let (Some(network), Some(host)) = (address.network_order(), address.host_order()) {
        let endian = if cfg!(target_endian = "little") {
            "little"
        } else {
            "big"
        };
        writeln!(out, "network order  {network} (0x{network:08x})")?;
        writeln!(
            out,
            "host order     {host} (0x{host:08x}, {endian}-endian host)"
        )?;
    }
    match (address.ip(), address.ipv4(), address.ipv4_mapped()) {
        (IpAddr::V4(_), _, Some(mapped)) => writeln!(out, "ipv4-mapped    {mapped}")?,
        (IpAddr::V6(_), Some(v4), _) => {
            writeln!(out, "ipv4           {v4} (this is its IPv4-mapped form)")?
        }
        _ => {}
    }
    Ok(())
}

fn hex(bytes: &[u8], separator: &str) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(separator)
}
