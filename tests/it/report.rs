//! `bench --plot`, `bench --hdr-log` and `socketkit report`: the picture is an SVG with its
//! series, the log is what HdrHistogram's own readers (the crate's, Python's `hdrh`) read, and
//! merged runs are their histograms added.

use std::path::Path;
use std::process::{Command, Output};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use socketkit::Engine;

use crate::common::{TestServer, assert_code, socketkit, stderr, stdout};

fn run(command: &str, args: &[&str]) -> Output {
    socketkit()
        .arg(command)
        .args(args)
        .output()
        .expect("run socketkit")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(output).trim()).expect("one JSON object")
}

/// The SVG's `<text>` contents and how many lines (`polyline`) it draws.
pub(crate) fn svg_texts_and_lines(path: &Path) -> (String, usize) {
    let script = "import sys, xml.etree.ElementTree as E\n\
                  root = E.parse(sys.argv[1]).getroot()\n\
                  assert root.tag == '{http://www.w3.org/2000/svg}svg', root.tag\n\
                  texts = [' '.join(t.itertext()).strip() for t in root.iter('{http://www.w3.org/2000/svg}text')]\n\
                  lines = [p for p in root.iter('{http://www.w3.org/2000/svg}polyline') if len(p.get('points').split()) > 1]\n\
                  print(len(lines)); print('\\n'.join(texts))";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("run python3");
    assert_code(&output, 0);
    let text = stdout(&output);
    let (count, texts) = text.split_once('\n').unwrap();
    (texts.to_string(), count.trim().parse().unwrap())
}

#[test]
fn bench_plot_is_an_svg_with_the_distribution_throughput_p99_and_lag_series() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let paced = dir.path().join("paced.svg");
    // 1.5 s: two seconds of figures, so the per-second series are lines.
    let output = run(
        "bench",
        &[&tcp, "-c", "2", "-r", "400", "-d", "1.5s", "--plot"],
    );
    assert_code(&output, 2); // --plot needs its FILE
    let output = run(
        "bench",
        &[
            &tcp,
            "-c",
            "2",
            "-r",
            "400",
            "-d",
            "1.5s",
            "--plot",
            paced.to_str().unwrap(),
        ],
    );
    assert_code(&output, 0);
    let (texts, lines) = svg_texts_and_lines(&paced);
    for series in [
        "latency by percentile",
        "good replies per second",
        "p99 latency per second",
        "p99 schedule lag per second",
    ] {
        assert!(texts.contains(series), "no {series:?} in {texts}");
    }
    assert!(
        texts.contains(&format!("pingpong against {tcp}: 2 connections")),
        "{texts}"
    );
    assert!(texts.contains("fixed rate 400/s"), "{texts}");
    for percentile in ["50%", "90%", "99%"] {
        assert!(
            texts.lines().any(|t| t == percentile),
            "no {percentile} tick: {texts}"
        );
    }
    // Four series, each drawn once and once more in its legend.
    assert!(lines >= 8, "{lines} lines");

    let unpaced = dir.path().join("unpaced.svg");
    let output = run(
        "bench",
        &[&tcp, "-n", "300", "--plot", unpaced.to_str().unwrap()],
    );
    assert_code(&output, 0);
    let (texts, _) = svg_texts_and_lines(&unpaced);
    assert!(texts.contains("p99 latency per second"), "{texts}");
    assert!(
        !texts.contains("schedule lag"),
        "no lag without --rate: {texts}"
    );
}

#[test]
fn stream_mode_has_nothing_to_plot_or_log() {
    let output = run(
        "bench",
        &[
            "tcp://127.0.0.1:9",
            "-m",
            "stream",
            "--hdr-log",
            "/nonexistent/x.hdr",
        ],
    );
    assert_code(&output, 2);
    assert!(
        stderr(&output).contains("stream mode times none"),
        "{}",
        stderr(&output)
    );
}

/// The log's untagged (latency) histograms added, by the hdrhistogram crate's own reader.
pub(crate) fn crate_reads(log: &Path) -> Histogram<u64> {
    let text = std::fs::read(log).unwrap();
    let mut all: Histogram<u64> = Histogram::new_with_bounds(1_000, 60_000_000_000, 3).unwrap();
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(&text) {
        if let LogEntry::Interval(interval) = entry.expect("a well-formed log") {
            if interval.tag().is_some() {
                continue;
            }
            intervals += 1;
            let bytes = base64_decode(interval.encoded_histogram());
            let h: Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .expect("a V2 histogram");
            all.add(&h).unwrap();
        }
    }
    assert!(intervals >= 1);
    all
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// The same, by Python's `hdrh` (PyPI `hdrhistogram`): total count and the values at the
/// 50th, 90th, 99th and 99.9th percentiles; `None` when the package is missing.
fn python_reads(log: &Path) -> Option<(u64, Vec<u64>)> {
    let script = "import sys, json\n\
                  from hdrh.histogram import HdrHistogram\n\
                  from hdrh.log import HistogramLogReader\n\
                  reader = HistogramLogReader(sys.argv[1], HdrHistogram(1000, 60000000000, 3))\n\
                  total = HdrHistogram(1000, 60000000000, 3)\n\
                  lags = 0\n\
                  while True:\n\
                  \x20   h = reader.get_next_interval_histogram()\n\
                  \x20   if h is None: break\n\
                  \x20   if h.get_tag() is None: total.add(h)\n\
                  \x20   else: lags += 1\n\
                  print(json.dumps([total.get_total_count(), [total.get_value_at_percentile(p) for p in (50, 90, 99, 99.9)], lags]))";
    let present = Command::new("python3")
        .args(["-c", "import hdrh"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        eprintln!(
            "skipped: Python's hdrh is missing (pip install hdrhistogram; .ci/run installs it)"
        );
        return None;
    }
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(log)
        .output()
        .unwrap();
    assert_code(&output, 0);
    let value: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let values = value[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    Some((value[0].as_u64().unwrap(), values))
}

fn quantiles(h: &Histogram<u64>) -> Vec<u64> {
    [0.5, 0.9, 0.99, 0.999]
        .iter()
        .map(|q| h.value_at_quantile(*q))
        .collect()
}

#[test]
fn the_hdr_log_reads_back_in_the_hdrhistogram_crate_and_in_python_with_the_same_figures() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.hdr");
    let output = run(
        "bench",
        &[
            &tcp,
            "-c",
            "2",
            "-r",
            "1000",
            "-n",
            "1500",
            "--json",
            "--hdr-log",
            log.to_str().unwrap(),
        ],
    );
    assert_code(&output, 0);
    let report = json(&output);
    assert_eq!(report["ok"], 1500);

    let all = crate_reads(&log);
    assert_eq!(all.len(), 1500);
    let p99_us = all.value_at_quantile(0.99) as f64 / 1000.0;
    assert_eq!(report["latency_us"]["p99"].as_f64().unwrap(), p99_us);
    // bench --json carries the same histogram, encoded.
    let encoded = base64_decode(report["latency_histogram"].as_str().unwrap());
    let from_json: Histogram<u64> = Deserializer::new()
        .deserialize(&mut encoded.as_slice())
        .unwrap();
    assert_eq!(from_json.len(), all.len());
    assert_eq!(quantiles(&from_json), quantiles(&all));

    if let Some((count, values)) = python_reads(&log) {
        assert_eq!(count, 1500);
        assert_eq!(values, quantiles(&all));
    }

    // The log, written as the run went, reads back in `socketkit report` as the run's own
    // report: the same counts and the same percentiles, latencies and schedule lags.
    let back = json(&run("report", &["--json", log.to_str().unwrap()]));
    for field in [
        "ok",
        "errors",
        "connections",
        "rate",
        "elapsed_s",
        "latency_us",
        "schedule_lag_us",
    ] {
        assert_eq!(back[field], report[field], "{field}");
    }
    // The same values in the histograms (their encodings may size the arrays differently).
    let recorded = |value: &serde_json::Value| -> Vec<(u64, u64)> {
        let bytes = base64_decode(value.as_str().unwrap());
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    };
    for field in ["latency_histogram", "schedule_lag_histogram"] {
        assert_eq!(recorded(&back[field]), recorded(&report[field]), "{field}");
    }
    // One interval a second (latencies, lags), from 0 on, in order.
    let text = std::fs::read_to_string(&log).unwrap();
    let starts: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(",HISTF") && !l.starts_with("Tag="))
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let seconds = report["elapsed_s"].as_f64().unwrap().ceil() as usize;
    assert_eq!(starts.len(), seconds, "{text}");
    assert!(
        starts
            .iter()
            .enumerate()
            .all(|(i, s)| *s == format!("{i}.000"))
    );
}

#[test]
fn the_hdr_log_is_written_as_the_run_goes_so_a_killed_run_leaves_a_log_cut_short() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.hdr");
    let mut bench = socketkit()
        .args(["bench", &tcp, "-r", "200", "-d", "60s", "--hdr-log"])
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The event: the first second's interval on disk while the run goes on (a file offers
    // nothing to wait on but its content; looked at every 50 ms, for at most 30 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().any(|l| l.starts_with("0.000,1.000,")) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no interval after 30 s: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    bench.kill().unwrap();
    bench.wait().unwrap();
    assert!(text.starts_with("#[socketkit bench: {"), "{text}");
    assert!(text.contains(&format!("\"endpoint\":\"{tcp}\"")), "{text}");

    let output = run("report", &[log.to_str().unwrap()]);
    assert_code(&output, 2);
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("cut short"), "{error}");
    // HdrHistogram's own readers take what was written.
    assert!(!crate_reads(&log).is_empty());
}

#[test]
fn report_adds_runs_histograms_and_refuses_different_runs_without_force() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (a, b, c) = (path("a.hdr"), path("b.json"), path("c.hdr"));
    assert_code(
        &run("bench", &[&tcp, "-c", "2", "-n", "400", "--hdr-log", &a]),
        0,
    );
    let output = run("bench", &[&tcp, "-c", "2", "-n", "600", "--json"]);
    assert_code(&output, 0);
    std::fs::write(&b, &output.stdout).unwrap();
    assert_code(
        &run(
            "bench",
            &[
                &tcp,
                "-c",
                "2",
                "-n",
                "300",
                "--size",
                "128",
                "--hdr-log",
                &c,
            ],
        ),
        0,
    );

    let output = run("report", &["--json", &a, &b]);
    assert_code(&output, 0);
    let merged = json(&output);
    assert_eq!(merged["ok"], 1000);
    assert_eq!(merged["connections"], 4);
    assert_eq!(merged["merged"].as_array().unwrap().len(), 2);
    let mut all = crate_reads(Path::new(&a));
    let from_b = base64_decode(
        json(&run("report", &["--json", &b]))["latency_histogram"]
            .as_str()
            .unwrap(),
    );
    let from_b: Histogram<u64> = Deserializer::new()
        .deserialize(&mut from_b.as_slice())
        .unwrap();
    all.add(&from_b).unwrap();
    let p99_us = all.value_at_quantile(0.99) as f64 / 1000.0;
    assert_eq!(merged["latency_us"]["p99"].as_f64().unwrap(), p99_us);

    let output = run("report", &[&a, &b]);
    assert_code(&output, 0);
    let text = stdout(&output);
    assert!(text.contains(&format!("merged     {a}: 400 ok")), "{text}");
    assert!(
        text.contains(&format!("merged     {b}:1: 600 ok")),
        "{text}"
    );
    assert!(text.contains("requests   1000 ok"), "{text}");

    let output = run("report", &[&a, &c]);
    assert_code(&output, 2);
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.contains("size 64 ≠ 128") && error.contains("--force"),
        "{error}"
    );

    let svg = path("merged.svg");
    let output = run("report", &["--force", &a, &c, "--plot", &svg]);
    assert_code(&output, 0);
    assert!(stdout(&output).contains("(differs: size 64 ≠ 128)"));
    let (texts, _) = svg_texts_and_lines(Path::new(&svg));
    assert!(texts.contains("2 runs merged: pingpong"), "{texts}");
}

#[test]
fn a_corrupt_or_truncated_log_is_one_line_naming_the_file_and_line() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.hdr");
    let output = run(
        "bench",
        &[&tcp, "-n", "200", "--hdr-log", log.to_str().unwrap()],
    );
    assert_code(&output, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let interval = text
        .lines()
        .position(|l| l.contains(",HISTF"))
        .expect("an interval line")
        + 1;
    let broken = dir.path().join("broken.hdr");
    let cases = [
        // The histogram's cookie garbled.
        (text.replacen(",HISTF", ",HISTX", 1), interval, "histogram"),
        // Cut in the middle of the first interval's histogram.
        (
            text[..text.find(",HISTF").unwrap() + 20].to_string(),
            interval,
            "cut short",
        ),
        // Cut after a whole line: the closing line is missing.
        (
            text.lines()
                .take(interval)
                .map(|l| format!("{l}\n"))
                .collect(),
            interval,
            "cut short",
        ),
        (
            text.replacen(",HISTF", ";HISTF", 1),
            interval,
            "not an interval log line",
        ),
        (text.replacen("\"mode\"", "\"mood\"", 1), 1, "mode"),
        (
            "0.000,1.000,0.1,HISTFAAAA\n".to_string(),
            1,
            "not a socketkit bench log",
        ),
    ];
    for (content, line, reason) in cases {
        std::fs::write(&broken, &content).unwrap();
        let output = run("report", &[broken.to_str().unwrap()]);
        assert_code(&output, 2);
        let error = stderr(&output);
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(
            error.contains(&format!("{}:{line}: ", broken.display())) && error.contains(reason),
            "want line {line} and {reason:?}: {error}"
        );
    }
    let output = run(
        "report",
        &[dir.path().join("missing.hdr").to_str().unwrap()],
    );
    assert_code(&output, 1);
    assert!(stderr(&output).contains("missing.hdr"));
}
