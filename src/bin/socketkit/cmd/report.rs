//! `socketkit report`: add bench runs up into one report, printed as bench prints its own.

use std::path::{Path, PathBuf};

use socketkit::bench::Report;

use super::bench::{check_hdr_log, check_plot, print, write_plot};
use crate::cli::ReportArgs;

/// One run read from a file: where it came from, and its report.
struct Run {
    file: PathBuf,
    /// The line of a `bench --json` output it is on; `None` for an HDR log.
    line: Option<usize>,
    report: Report,
}

impl Run {
    fn name(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    check_hdr_log(Some(&args.files[0]))?;
    check_plot(args.plot.as_deref())?;
    let mut runs = Vec::new();
    for file in &args.files {
        runs.extend(read(file)?);
    }
    let first = &runs[0];
    for other in &runs[1..] {
        let differences = first.report.differences(&other.report);
        if !differences.is_empty() && !args.force {
            return Err(socketkit::Error::Config(format!(
                "{} and {} ran differently ({}): merge them anyway with --force",
                first.name(),
                other.name(),
                differences.join(", ")
            ))
            .into());
        }
    }
    let reports: Vec<Report> = runs.iter().map(|r| r.report.clone()).collect();
    let merged = Report::merge(&reports).expect("at least one run: clap requires a file");
    if args.json {
        let list: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "file": r.name(),
                    "ok": r.report.ok,
                    "elapsed_s": r.report.elapsed.as_secs_f64(),
                    "differences": first.report.differences(&r.report),
                })
            })
            .collect();
        print(&merged, true, Some(("merged", list.into())))?;
    } else {
        for r in &runs {
            let differences = first.report.differences(&r.report);
            println!(
                "{:<10} {}: {} ok in {:.2} s{}",
                "merged",
                r.name(),
                r.report.ok,
                r.report.elapsed.as_secs_f64(),
                if differences.is_empty() {
                    String::new()
                } else {
                    format!(" (differs: {})", differences.join(", "))
                }
            );
        }
        print(&merged, false, None)?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} merged: {}",
            match runs.len() {
                1 => "1 run".to_string(),
                n => format!("{n} runs"),
            },
            merged.parameters()
        );
        write_plot(&merged, &title, path)?;
    }
    Ok(())
}

/// The runs in one file: an HDR log is one run, a `bench --json` output one a line.
fn read(file: &Path) -> anyhow::Result<Vec<Run>> {
    let text = std::fs::read(file)
        .map_err(|e| socketkit::Error::io(format!("cannot read {}", file.display()), e))?;
    let bad = |line: usize, reason: String| {
        anyhow::Error::from(socketkit::Error::Config(format!(
            "{}:{line}: {reason}",
            file.display()
        )))
    };
    let text = String::from_utf8(text).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        bad(line, "not text (UTF-8)".into())
    })?;
    parse(file, &text).map_err(|(line, reason)| bad(line, reason))
}

#[cfg(feature = "hdr-log")]
fn parse(file: &Path, text: &str) -> Result<Vec<Run>, (usize, String)> {
    if !text.trim_start().starts_with('{') {
        let report = Report::from_hdr_log(text).map_err(|e| (e.line, e.reason))?;
        return Ok(vec![Run {
            file: file.to_path_buf(),
            line: None,
            report,
        }]);
    }
    let mut runs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| (i + 1, format!("not a bench --json line ({e})")))?;
        let report = Report::from_json(&value).map_err(|reason| (i + 1, reason))?;
        runs.push(Run {
            file: file.to_path_buf(),
            line: Some(i + 1),
            report,
        });
    }
    if runs.is_empty() {
        return Err((1, "no run in it".into()));
    }
    Ok(runs)
}

#[cfg(not(feature = "hdr-log"))]
fn parse(_: &Path, _: &str) -> Result<Vec<Run>, (usize, String)> {
    Err((1, "reading runs needs the hdr-log feature".into()))
}
