//! The endpoint parser never panics, and what it prints parses back to the same endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketkit::Endpoint;

fuzz_target!(|text: &str| {
    if let Ok(endpoint) = text.parse::<Endpoint>() {
        let printed = endpoint.to_string();
        let again: Endpoint = printed.parse().expect("a printed endpoint parses");
        assert_eq!(again, endpoint);
    }
});
