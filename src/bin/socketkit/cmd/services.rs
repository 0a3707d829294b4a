//! `socketkit services`: the built-in services, their RFCs and well-known ports.

use std::io::{self, Write};

use socketkit::service::SERVICES;

pub fn run(json: bool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        for s in SERVICES {
            let line = serde_json::json!({
                "name": s.name,
                "rfc": s.rfc,
                "port": s.port,
                "summary": s.summary,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    writeln!(out, "{:<9} {:<9} {:>5}  DESCRIPTION", "NAME", "RFC", "PORT")?;
    for s in SERVICES {
        let rfc = s.rfc.map_or("-".to_string(), |n| format!("RFC {n}"));
        let port = s.port.map_or("-".to_string(), |p| p.to_string());
        writeln!(out, "{:<9} {:<9} {:>5}  {}", s.name, rfc, port, s.summary)?;
    }
    Ok(())
}
