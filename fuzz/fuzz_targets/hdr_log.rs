//! `socketkit report`'s readers never panic on a file from elsewhere: an HDR interval log (its
//! comment lines, intervals and base64-compressed histograms) or a `bench --json` line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketkit::bench::Report;

fuzz_target!(|text: &str| {
    if let Ok(report) = Report::from_hdr_log(text) {
        // What was read writes back and reads again.
        let again = Report::from_hdr_log(&report.to_hdr_log(std::time::SystemTime::UNIX_EPOCH))
            .expect("a written log reads back");
        assert_eq!(again.ok, report.ok);
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = Report::from_json(&value);
    }
});
