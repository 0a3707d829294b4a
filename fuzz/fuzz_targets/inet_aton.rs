//! inet_aton never panics, and whatever it accepts prints as a dotted quad it accepts again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(address) = socketkit::names::aton(text) {
        let dotted = socketkit::names::ntoa(address.octets());
        assert_eq!(socketkit::names::aton(&dotted).unwrap(), address);
    }
});
