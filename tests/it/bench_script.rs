//! `scripts/bench.sh`'s A/B mode (`--against REV`, `--cells`, `--servers`): usage errors are one
//! line and exit status 2 before anything is built, the report pairs this tree's engines with
//! REV's run by run, and (ignored by `cargo test`, run by CI after the tests) a whole A/B run
//! against HEAD measures both trees interleaved.
//!
//! The whole run is ignored by default because it builds socketkit at HEAD in its own target
//! directory, minutes on a fresh machine, which should not compete with the timing-sensitive
//! tests running beside it; `.ci/run` runs it alone.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::common::{assert_code, stderr};
use crate::examples::example;

/// `bash scripts/bench.sh ARGS` with its output under `out`, for usage errors (no build).
fn bench_sh(args: &[&str], out: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench.sh");
    let mut command = Command::new("bash");
    command.arg(script).arg("--out").arg(out).args(args);
    assert_cmd::Command::from_std(command)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run scripts/bench.sh")
}

/// Exit status 2, and one line on stderr that contains every one of `words`.
#[track_caller]
fn assert_usage_error(output: &Output, words: &[&str]) {
    assert_code(output, 2);
    let text = stderr(output);
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text:?}");
    for word in words {
        assert!(text.contains(word), "{word:?} in {text:?}");
    }
}

#[test]
fn bench_sh_names_a_revision_git_does_not_know_in_one_line_and_exits_2_before_building() {
    let out = tempfile::tempdir().unwrap();
    let output = bench_sh(
        &[
            "--quick",
            "--against",
            "no-such-revision-4f1c",
            "--cells",
            "pingpong-1",
        ],
        out.path(),
    );
    assert_usage_error(&output, &["--against", "no-such-revision-4f1c"]);
    // Nothing was started: the results of an earlier run would still be there.
    assert!(!out.path().join("results.ndjson").exists());
}

#[test]
fn bench_sh_refuses_unknown_cells_and_servers_naming_the_known_ones() {
    let out = tempfile::tempdir().unwrap();
    let output = bench_sh(
        &["--quick", "--cells", "pingpong-50,pingpong-500"],
        out.path(),
    );
    assert_usage_error(
        &output,
        &["pingpong-500", "pingpong-50,", "relay-stream", "pacing"],
    );
    let output = bench_sh(&["--quick", "--servers", "async,nginx"], out.path());
    assert_usage_error(&output, &["nginx", "uring", "c-epoll"]);
    let output = bench_sh(
        &["--quick", "--against", "HEAD", "--servers", "tokio"],
        out.path(),
    );
    assert_usage_error(&output, &["--against", "--servers"]);
    let output = bench_sh(&["--quick", "--cells"], out.path());
    assert_usage_error(&output, &["--cells"]);
    assert!(!out.path().join("results.ndjson").exists());
}

/// Results as bench.sh writes them: this tree's async engine and REV's, two runs each of a
/// 50-connection ping-pong, every run answering 100,000 requests at 100 clock ticks a second.
/// `ours` and `theirs` are (CPU ticks, requests per second) of runs 1 and 2.
fn results(ours: [(u64, u64); 2], theirs: [(u64, u64); 2], against: bool) -> String {
    let mut lines = vec![
        format!(
            r#"{{"type":"meta","date":"2026-12-02 18:00 UTC","cores":2,"clk_tck":100,"pinned":true,"profile":"release","commit":"1111111","quick":false,"runs":2,"duration":"2s","idle_connections":5000,"against":{}}}"#,
            if against {
                r#"{"rev":"abc1234","commit":"abc1234abc1234abc1234abc1234abc1234abc1","asked":"HEAD~1","subject":"the engine before"}"#
            } else {
                "null"
            }
        ),
        r#"{"type":"server","id":"socketkit-async","label":"socketkit async","what":"serve upper -e async"}"#.to_owned(),
        r#"{"type":"scenario","id":"pingpong-50","label":"ping-pong 64 B, 50 connections","unit":"req/s","args":"-m pingpong -c 50"}"#.to_owned(),
    ];
    if against {
        lines.insert(
            2,
            r#"{"type":"server","id":"socketkit@abc1234-async","label":"socketkit@abc1234 async","what":"serve upper -e async, built from abc1234","ab_of":"socketkit-async","rev":"abc1234"}"#.to_owned(),
        );
    }
    let run = |server: &str, number: usize, (ticks, rate): (u64, u64)| {
        format!(
            r#"{{"type":"run","scenario":"pingpong-50","server":"{server}","run":{number},"others_permille":10,"error":null,"cpu_ticks":{ticks},"rss_before_kb":null,"rss_held_kb":null,"held":null,"short":false,"bench":{{"ok":100000,"requests_per_s":{rate},"elapsed_s":2.0,"own_cpu_s":1.0,"latency_us":{{"p50":100,"p99":200}}}}}}"#
        )
    };
    for number in 1..=2 {
        lines.push(run("socketkit-async", number, ours[number - 1]));
        if against {
            lines.push(run("socketkit@abc1234-async", number, theirs[number - 1]));
        }
    }
    lines.join("\n") + "\n"
}

/// Runs examples/bench_report on `ndjson`; returns report.md.
fn report(ndjson: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("results.ndjson");
    fs::write(&input, ndjson).unwrap();
    let output = assert_cmd::Command::from_std(example("bench_report"))
        .arg(&input)
        .arg(dir.path())
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run bench_report");
    assert_code(&output, 0);
    assert!(dir.path().join("chart.svg").is_file());
    fs::read_to_string(dir.path().join("report.md")).unwrap()
}

#[test]
fn bench_report_gives_this_tree_over_rev_paired_run_by_run() {
    // CPU per request: 5 and 6 µs against 10 and 10 (ratios 0.5 and 0.6); throughput 1,200
    // and 1,400 req/s against 1,000 and 1,000 (1.2 and 1.4). Medians of the paired ratios.
    let md = report(&results(
        [(50, 1200), (60, 1400)],
        [(100, 1000), (100, 1000)],
        true,
    ));
    assert!(md.contains("## A/B: this tree against abc1234"), "{md}");
    assert!(
        md.contains("`1111111`") && md.contains("the engine before"),
        "{md}"
    );
    let row = md
        .lines()
        .find(|line| line.starts_with("| ping-pong 64 B, 50 connections | async |"))
        .unwrap_or_else(|| panic!("no A/B row in {md}"));
    assert_eq!(
        row,
        "| ping-pong 64 B, 50 connections | async | 5.50 · 10.0 µs/req | 0.55× (0.50×–0.60×) \
         | 1.30k · 1.00k req/s | 1.30× (1.20×–1.40×) |"
    );
    // REV's engine is a row of the matrices too, under its own label.
    assert!(md.contains("| socketkit@abc1234 async |"), "{md}");

    let plain = report(&results([(50, 1200), (60, 1400)], [(0, 0); 2], false));
    assert!(
        !plain.contains("A/B"),
        "no A/B table without --against: {plain}"
    );
}

/// What `git` says in the repository, trimmed; `None` outside a git checkout.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
#[ignore = "builds socketkit at HEAD in target/bench-ab (minutes when cold): .ci/run runs it alone"]
fn bench_sh_against_head_measures_both_trees_interleaved_and_reports_the_pairs() {
    let Some(short) = git(&["rev-parse", "--short", "HEAD"]) else {
        eprintln!("skipped: not a git checkout, so there is no HEAD to build");
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench.sh");
    // Two runs, to see the pair swap places in the second; the relay cell puts REV's relay in
    // front of REV's engine.
    let mut child = Command::new("bash")
        .arg(script)
        .args(["--quick", "--runs", "2", "--against", "HEAD"])
        .args([
            "--cells",
            "pingpong-50,relay-stream",
            "--servers",
            "async,tokio",
        ])
        .arg("--out")
        .arg(out.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(out.path().join("stdout")).unwrap())
        .stderr(fs::File::create(out.path().join("stderr")).unwrap())
        .spawn()
        .expect("run scripts/bench.sh");
    // Two cold builds (this tree's is warm after `cargo test`) and sixteen one-second runs.
    let status = match child.wait_timeout(Duration::from_secs(1800)).unwrap() {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scripts/bench.sh --against HEAD did not finish in 30 minutes");
        }
    };
    let log = fs::read_to_string(out.path().join("stderr")).unwrap();
    assert!(status.success(), "exit {status}:\n{log}");

    let ndjson = fs::read_to_string(out.path().join("results.ndjson")).unwrap();
    let rev_id = format!("socketkit@{short}-async");
    assert!(
        ndjson.contains(&format!(r#""ab_of":"socketkit-async","rev":"{short}""#)),
        "{ndjson}"
    );
    // The order of the runs: this tree first in run 1, REV first in run 2, tokio after both.
    let order: Vec<String> = ndjson
        .lines()
        .filter(|line| line.contains(r#""type":"run","scenario":"pingpong-50""#))
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            format!("{}#{}", record["server"].as_str().unwrap(), record["run"])
        })
        .collect();
    assert_eq!(
        order,
        [
            "socketkit-async#1".to_owned(),
            format!("{rev_id}#1"),
            "tokio#1".to_owned(),
            format!("{rev_id}#2"),
            "socketkit-async#2".to_owned(),
            "tokio#2".to_owned(),
        ]
    );
    assert!(
        ndjson.contains(&format!(
            r#""type":"run","scenario":"relay-stream","server":"{rev_id}""#
        )),
        "{ndjson}"
    );
    // No other cell, and no pacing figure (it was not asked for).
    assert!(!ndjson.contains(r#""scenario":"udp-8""#));
    assert!(!ndjson.contains(r#""type":"pacing""#));

    let md = fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        md.contains(&format!("## A/B: this tree against {short}")),
        "{md}"
    );
    // Both ratios with their range; the relay's CPU in a tiny run may be under a clock tick,
    // so only its throughput ratio is sure to be there.
    for (cell, ratios) in [
        ("ping-pong 64 B, 50 connections", 6),
        ("stream 8 MiB through socketkit relay", 3),
    ] {
        let row = md
            .lines()
            .find(|line| line.starts_with(&format!("| {cell}")) && line.contains("| async |"))
            .unwrap_or_else(|| panic!("no A/B row for {cell} in {md}"));
        assert!(
            row.matches('×').count() >= ratios,
            "ratios with their range: {row}"
        );
    }
    // REV's source is kept for the next run, marked with the commit it holds.
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-ab/{short}"));
    assert_eq!(
        fs::read_to_string(kept.join(".bench-ab-commit"))
            .unwrap()
            .trim(),
        git(&["rev-parse", "HEAD"]).unwrap()
    );
}
