//! The PROXY header path (the `ppp` parser behind socketkit's glue), driven as an engine
//! drives it: the bytes that have arrived are offered from the first one not yet consumed, in
//! pieces whose ends the first bytes choose. It never panics, never takes a byte it was not
//! offered nor more than the longest header, and a header it accepts is exactly the bytes it
//! took.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketkit::proxy::{HeaderReader, Step, V2_MAX_BYTES};

fuzz_target!(|input: &[u8]| {
    let Some((&pieces, stream)) = input.split_first() else {
        return;
    };
    let piece = usize::from(pieces % 64) + 1;
    let mut reader = HeaderReader::new();
    let (mut consumed, mut arrived) = (0, 0);
    loop {
        if consumed == arrived {
            if arrived == stream.len() {
                let _ = reader.eof();
                return;
            }
            arrived = (arrived + piece).min(stream.len());
        }
        match reader.offer(&stream[consumed..arrived]) {
            Ok(Step::Take(n)) => {
                assert!(n >= 1 && n <= arrived - consumed);
                consumed += n;
            }
            Ok(Step::Done(n, header)) => {
                assert!(n >= 1 && n <= arrived - consumed);
                consumed += n;
                assert_eq!(header.len, consumed);
                assert!(consumed <= V2_MAX_BYTES);
                return;
            }
            Err(_) => return,
        }
        assert!(consumed <= V2_MAX_BYTES);
    }
});
