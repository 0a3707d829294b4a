//! The case data behind [`super`]'s fast paths: the upper case of every two-byte character, and
//! which 64-code-point blocks have any case at all.
//!
//! Both are written out from Unicode 17.0 (`char::UNICODE_VERSION` of Rust 1.95) and expanded
//! at compile time: nothing is built on first use. The tests compare them with
//! `char::to_uppercase` for every character; when a newer Rust brings a newer Unicode that changes
//! them, the failing test prints the data to paste here.

/// The upper case of each of U+0080..U+07FF in UTF-8, indexed by code point minus 0x80: up to 7
/// bytes (the longest, `ΐ`, takes 6) padded with zeros, and the length in the last byte, so
/// that copying all 8 and advancing by the length needs no branch. 15 KiB.
pub(super) static TWO_BYTE_UPPER: [[u8; 8]; 0x780] = two_byte_upper();

/// Whether the 64-code-point block of `cp` has a character whose upper case is not itself. When
/// not, a character of the block is copied as it is. Above U+1FFFF the answer is always yes, so
/// that `char::to_uppercase` decides.
pub(super) fn may_have_upper_case(cp: u32) -> bool {
    CASED_BLOCKS
        .get(cp as usize >> 12)
        .is_none_or(|bits| (bits >> ((cp >> 6) & 63)) & 1 == 1)
}

/// One bit per 64 code points of U+0000..U+1FFFF, set when one of them upper-cases to anything
/// but itself. Kana, CJK, Hangul, most punctuation and symbols, and emoji are in blocks without
/// case. 256 bytes.
#[rustfmt::skip]
static CASED_BLOCKS: [u64; 32] = [
    0x00000000007FE7FE, 0xFF64000000008008, 0x001F000000080060, 0x0000000000000000,
    0x0000000000000000, 0x0000000000000000, 0x0000000000000000, 0x0000000000000000,
    0x0000000000000000, 0x0000000000000000, 0x00006000F6000000, 0x0000000000000000,
    0x0000000000000000, 0x0000000000000000, 0x0000000000000000, 0x2000100000000000,
    0x00680000004B0000, 0x0000000800000000, 0x0000000000000000, 0x0000000000000000,
    0x0000000000000000, 0x0000000000000000, 0x0E00000000000000, 0x0000000000000000,
    0x0000000000000000, 0x0000000000000000, 0x0000000000000000, 0x0000000000000000,
    0x0000000000000000, 0x0000000000000000, 0x0000003000000000, 0x0000000000000000,
];

/// The characters of U+0080..U+07FF that upper-case to one other character, as runs
/// `(first, last, step, delta)`: from `first` to `last`, every `step`-th code point upper-cases
/// to itself plus `delta`.
#[rustfmt::skip]
const RUNS: [(u32, u32, u32, i32); 115] = [
    (0x00B5, 0x00B5, 1, 743), (0x00E0, 0x00F6, 1, -32), (0x00F8, 0x00FE, 1, -32), (0x00FF, 0x00FF, 1, 121),
    (0x0101, 0x012F, 2, -1), (0x0131, 0x0131, 1, -232), (0x0133, 0x0137, 2, -1), (0x013A, 0x0148, 2, -1),
    (0x014B, 0x0177, 2, -1), (0x017A, 0x017E, 2, -1), (0x017F, 0x017F, 1, -300), (0x0180, 0x0180, 1, 195),
    (0x0183, 0x0185, 2, -1), (0x0188, 0x0188, 1, -1), (0x018C, 0x018C, 1, -1), (0x0192, 0x0192, 1, -1),
    (0x0195, 0x0195, 1, 97), (0x0199, 0x0199, 1, -1), (0x019A, 0x019A, 1, 163), (0x019B, 0x019B, 1, 42561),
    (0x019E, 0x019E, 1, 130), (0x01A1, 0x01A5, 2, -1), (0x01A8, 0x01A8, 1, -1), (0x01AD, 0x01AD, 1, -1),
    (0x01B0, 0x01B0, 1, -1), (0x01B4, 0x01B6, 2, -1), (0x01B9, 0x01B9, 1, -1), (0x01BD, 0x01BD, 1, -1),
    (0x01BF, 0x01BF, 1, 56), (0x01C5, 0x01C5, 1, -1), (0x01C6, 0x01C6, 1, -2), (0x01C8, 0x01C8, 1, -1),
    (0x01C9, 0x01C9, 1, -2), (0x01CB, 0x01CB, 1, -1), (0x01CC, 0x01CC, 1, -2), (0x01CE, 0x01DC, 2, -1),
    (0x01DD, 0x01DD, 1, -79), (0x01DF, 0x01EF, 2, -1), (0x01F2, 0x01F2, 1, -1), (0x01F3, 0x01F3, 1, -2),
    (0x01F5, 0x01F5, 1, -1), (0x01F9, 0x021F, 2, -1), (0x0223, 0x0233, 2, -1), (0x023C, 0x023C, 1, -1),
    (0x023F, 0x0240, 1, 10815), (0x0242, 0x0242, 1, -1), (0x0247, 0x024F, 2, -1), (0x0250, 0x0250, 1, 10783),
    (0x0251, 0x0251, 1, 10780), (0x0252, 0x0252, 1, 10782), (0x0253, 0x0253, 1, -210), (0x0254, 0x0254, 1, -206),
    (0x0256, 0x0257, 1, -205), (0x0259, 0x0259, 1, -202), (0x025B, 0x025B, 1, -203), (0x025C, 0x025C, 1, 42319),
    (0x0260, 0x0260, 1, -205), (0x0261, 0x0261, 1, 42315), (0x0263, 0x0263, 1, -207), (0x0264, 0x0264, 1, 42343),
    (0x0265, 0x0265, 1, 42280), (0x0266, 0x0266, 1, 42308), (0x0268, 0x0268, 1, -209), (0x0269, 0x0269, 1, -211),
    (0x026A, 0x026A, 1, 42308), (0x026B, 0x026B, 1, 10743), (0x026C, 0x026C, 1, 42305), (0x026F, 0x026F, 1, -211),
    (0x0271, 0x0271, 1, 10749), (0x0272, 0x0272, 1, -213), (0x0275, 0x0275, 1, -214), (0x027D, 0x027D, 1, 10727),
    (0x0280, 0x0280, 1, -218), (0x0282, 0x0282, 1, 42307), (0x0283, 0x0283, 1, -218), (0x0287, 0x0287, 1, 42282),
    (0x0288, 0x0288, 1, -218), (0x0289, 0x0289, 1, -69), (0x028A, 0x028B, 1, -217), (0x028C, 0x028C, 1, -71),
    (0x0292, 0x0292, 1, -219), (0x029D, 0x029D, 1, 42261), (0x029E, 0x029E, 1, 42258), (0x0345, 0x0345, 1, 84),
    (0x0371, 0x0373, 2, -1), (0x0377, 0x0377, 1, -1), (0x037B, 0x037D, 1, 130), (0x03AC, 0x03AC, 1, -38),
    (0x03AD, 0x03AF, 1, -37), (0x03B1, 0x03C1, 1, -32), (0x03C2, 0x03C2, 1, -31), (0x03C3, 0x03CB, 1, -32),
    (0x03CC, 0x03CC, 1, -64), (0x03CD, 0x03CE, 1, -63), (0x03D0, 0x03D0, 1, -62), (0x03D1, 0x03D1, 1, -57),
    (0x03D5, 0x03D5, 1, -47), (0x03D6, 0x03D6, 1, -54), (0x03D7, 0x03D7, 1, -8), (0x03D9, 0x03EF, 2, -1),
    (0x03F0, 0x03F0, 1, -86), (0x03F1, 0x03F1, 1, -80), (0x03F2, 0x03F2, 1, 7), (0x03F3, 0x03F3, 1, -116),
    (0x03F5, 0x03F5, 1, -96), (0x03F8, 0x03F8, 1, -1), (0x03FB, 0x03FB, 1, -1), (0x0430, 0x044F, 1, -32),
    (0x0450, 0x045F, 1, -80), (0x0461, 0x0481, 2, -1), (0x048B, 0x04BF, 2, -1), (0x04C2, 0x04CE, 2, -1),
    (0x04CF, 0x04CF, 1, -15), (0x04D1, 0x052F, 2, -1), (0x0561, 0x0586, 1, -48),
];

/// The characters of U+0080..U+07FF that upper-case to more than one (SpecialCasing.txt).
const LONGER: [(char, &str); 6] = [
    ('\u{DF}', "SS"),                     // ß
    ('\u{149}', "\u{2BC}N"),              // ŉ
    ('\u{1F0}', "J\u{30C}"),              // ǰ
    ('\u{390}', "\u{399}\u{308}\u{301}"), // ΐ
    ('\u{3B0}', "\u{3A5}\u{308}\u{301}"), // ΰ
    ('\u{587}', "\u{535}\u{552}"),        // և
];

/// [`TWO_BYTE_UPPER`] from [`RUNS`] and [`LONGER`]; every other character is its own upper case.
const fn two_byte_upper() -> [[u8; 8]; 0x780] {
    let mut table = [[0; 8]; 0x780];
    let mut cp = 0x80;
    while cp < 0x800 {
        table[cp as usize - 0x80] = char_entry(cp);
        cp += 1;
    }
    let mut run = 0;
    while run < RUNS.len() {
        let (first, last, step, delta) = RUNS[run];
        let mut cp = first;
        while cp <= last {
            let Some(upper) = cp.checked_add_signed(delta) else {
                panic!("a delta leaves the code points");
            };
            table[cp as usize - 0x80] = char_entry(upper);
            cp += step;
        }
        run += 1;
    }
    let mut longer = 0;
    while longer < LONGER.len() {
        let (c, upper) = LONGER[longer];
        table[c as usize - 0x80] = entry(upper);
        longer += 1;
    }
    table
}

/// The table entry for the upper case `upper` (7 bytes at most).
const fn entry(upper: &str) -> [u8; 8] {
    let bytes = upper.as_bytes();
    let mut entry = [0; 8];
    let mut k = 0;
    while k < bytes.len() {
        entry[k] = bytes[k];
        k += 1;
    }
    entry[7] = bytes.len() as u8;
    entry
}

/// The table entry for the upper case that is the code point `upper`.
const fn char_entry(upper: u32) -> [u8; 8] {
    let Some(c) = char::from_u32(upper) else {
        panic!("not a character");
    };
    entry(c.encode_utf8(&mut [0; 4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`CASED_BLOCKS`], [`RUNS`] and [`LONGER`] as this Rust's `char::to_uppercase` has them.
    struct Derived {
        blocks: [u64; 32],
        runs: Vec<(u32, u32, u32, i32)>,
        longer: Vec<(char, String)>,
    }

    fn derived() -> Derived {
        let mut blocks = [0u64; 32];
        for c in ('\0'..='\u{1FFFF}').filter(|c| c.to_uppercase().ne([*c])) {
            let cp = u32::from(c) as usize;
            blocks[cp >> 12] |= 1 << ((cp >> 6) & 63);
        }
        let (mut runs, mut longer) = (Vec::<(u32, u32, u32, i32)>::new(), Vec::new());
        for c in ('\u{80}'..='\u{7FF}').filter(|c| c.to_uppercase().ne([*c])) {
            let mut upper = c.to_uppercase();
            let (Some(u), None) = (upper.next(), upper.next()) else {
                longer.push((c, c.to_uppercase().collect()));
                continue;
            };
            let (cp, delta) = (u32::from(c), u32::from(u) as i32 - u32::from(c) as i32);
            match runs.last_mut() {
                // A run of one takes its step from the next code point with the same delta.
                Some((first, last, step, d))
                    if *d == delta
                        && (cp - *last == *step || (first == last && cp - *last == 2)) =>
                {
                    (*step, *last) = (cp - *last, cp);
                }
                _ => runs.push((cp, cp, 1, delta)),
            }
        }
        Derived {
            blocks,
            runs,
            longer,
        }
    }

    #[test]
    fn the_data_is_that_of_this_rusts_unicode() {
        let Derived {
            blocks,
            runs,
            longer,
        } = derived();
        let same_longer = longer.len() == LONGER.len()
            && longer
                .iter()
                .zip(LONGER)
                .all(|((c, u), (lc, lu))| *c == lc && u == lu);
        if blocks == CASED_BLOCKS && runs == RUNS && same_longer {
            return;
        }
        let escape = |s: &str| -> String {
            s.chars()
                .map(|c| match c {
                    ' '..='~' => c.to_string(),
                    _ => format!("\\u{{{:X}}}", u32::from(c)),
                })
                .collect()
        };
        let lines = |items: Vec<String>, per_line: usize| -> String {
            items
                .chunks(per_line)
                .map(|l| format!("    {},\n", l.join(", ")))
                .collect()
        };
        let blocks = blocks.iter().map(|b| format!("0x{b:016X}"));
        let runs = runs
            .iter()
            .map(|(a, b, s, d)| format!("(0x{a:04X}, 0x{b:04X}, {s}, {d})"));
        let longer = longer.iter().map(|(c, upper)| {
            let c = format!("'{}'", escape(&c.to_string()));
            format!("({c}, \"{}\")", escape(upper))
        });
        panic!(
            "Rust's Unicode {:?} differs from the data; replace it with\n\
             CASED_BLOCKS:\n{}RUNS:\n{}LONGER:\n{}",
            char::UNICODE_VERSION,
            lines(blocks.collect(), 4),
            lines(runs.collect(), 4),
            lines(longer.collect(), 1),
        );
    }

    #[test]
    fn the_two_byte_table_is_std_for_every_two_byte_character() {
        for c in '\u{80}'..='\u{7FF}' {
            let upper: String = c.to_uppercase().collect();
            let entry = &TWO_BYTE_UPPER[u32::from(c) as usize - 0x80];
            let len = usize::from(entry[7]);
            assert_eq!(&entry[..len], upper.as_bytes(), "{c:?}");
            assert!(entry[len..7].iter().all(|&b| b == 0), "{c:?}: {entry:x?}");
        }
    }

    #[test]
    fn code_points_past_the_bitmap_are_left_to_std() {
        assert!(may_have_upper_case(0x20000) && may_have_upper_case(0x10FFFF));
    }
}
