//! The dump parser never panics (nor fills memory) on any text, and a dump of any bytes, in
//! either format, parses back to them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketkit::dump::{Direction, DumpFormat, format_chunk, parse};

fuzz_target!(|input: (&[u8], &str)| {
    let (bytes, text) = input;
    for format in [DumpFormat::Hex, DumpFormat::Text] {
        let _ = parse(format, text);
        let mut dump = String::new();
        let at = std::time::UNIX_EPOCH;
        format_chunk(format, at, &"127.0.0.1:9", Direction::Sent, bytes, &mut dump);
        let chunks = parse(format, &dump).expect("a dump parses");
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].bytes, bytes);
    }
});
