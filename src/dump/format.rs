//! The dump's text, sans-IO: one chunk in, its lines out (and back, for tests and tools).
//!
//! ```text
//! # 2026-12-02T12:47:00.123456Z received 12 bytes from 127.0.0.1:40222
//! 00000000  68 65 6c 6c 6f 20 77 6f  72 6c 64 0a              |hello world.|
//! 0000000c
//! # 2026-12-02T12:47:00.123901Z sent 12 bytes to 127.0.0.1:40222
//! ...
//! ```
//!
//! A header line starts with `#`; the body is `hexdump -C`'s layout byte for byte (an 8-digit
//! hex offset from the chunk's start, 16 bytes in two groups of 8, `|printable|`, a `*` for a
//! run of lines equal to the one above, the length on the last line), or in `text` the bytes
//! with non-printables escaped (`\n`, `\r`, `\t`, `\\`, `\xNN`; a real line break follows
//! each `\n`, and a `#` that would begin a line is written `\x23`). No crate formats
//! `hexdump -C` (the `hexdump`/`pretty-hex` crates use layouts of their own), so it is here.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

/// How chunks are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// `hexdump -C`'s layout.
    Hex,
    /// The bytes as text, non-printables escaped.
    Text,
}

/// Which way a chunk went, seen from socketkit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written to the peer.
    Sent,
    /// Read from the peer.
    Received,
}

/// Appends one chunk, header and body, to `out`. `time` is when it went by (the caller's
/// clock), `peer` the other end.
///
/// # Examples
///
/// ```
/// use socketkit::dump::{Direction, DumpFormat, format_chunk};
/// let mut out = String::new();
/// let at = std::time::UNIX_EPOCH;
/// format_chunk(DumpFormat::Hex, at, &"127.0.0.1:9", Direction::Sent, b"hi\n", &mut out);
/// assert_eq!(out, "# 1970-01-01T00:00:00.000000Z sent 3 bytes to 127.0.0.1:9\n\
///                  00000000  68 69 0a                                          |hi.|\n\
///                  00000003\n");
/// ```
pub fn format_chunk(
    format: DumpFormat,
    time: SystemTime,
    peer: &dyn fmt::Display,
    direction: Direction,
    bytes: &[u8],
    out: &mut String,
) {
    let (verb, preposition) = match direction {
        Direction::Sent => ("sent", "to"),
        Direction::Received => ("received", "from"),
    };
    let _ = writeln!(
        out,
        "# {} {verb} {} bytes {preposition} {peer}",
        humantime::format_rfc3339_micros(time),
        bytes.len()
    );
    match format {
        DumpFormat::Hex => hexdump(bytes, out),
        DumpFormat::Text => escape_text(bytes, out),
    }
}

/// Appends `bytes` in `hexdump -C`'s layout (squeezed runs included) to `out`.
pub fn hexdump(bytes: &[u8], out: &mut String) {
    let mut previous: Option<&[u8]> = None;
    let mut squeezing = false;
    for (i, line) in bytes.chunks(16).enumerate() {
        if line.len() == 16 && previous == Some(line) {
            if !squeezing {
                out.push_str("*\n");
                squeezing = true;
            }
            continue;
        }
        squeezing = false;
        previous = Some(line);
        let _ = write!(out, "{:08x}  ", i * 16);
        for column in 0..16 {
            match line.get(column) {
                Some(byte) => {
                    let _ = write!(out, "{byte:02x} ");
                }
                None => out.push_str("   "),
            }
            if column == 7 {
                out.push(' ');
            }
        }
        out.push_str(" |");
        out.extend(line.iter().map(|&b| printable(b)));
        out.push_str("|\n");
    }
    if !bytes.is_empty() {
        let _ = writeln!(out, "{:08x}", bytes.len());
    }
}

/// What `hexdump -C` shows for a byte in its right-hand column.
fn printable(byte: u8) -> char {
    if (0x20..0x7f).contains(&byte) {
        char::from(byte)
    } else {
        '.'
    }
}

/// Appends `bytes` with non-printables escaped, ending the text with a line break.
pub fn escape_text(bytes: &[u8], out: &mut String) {
    let mut line_start = true;
    for &byte in bytes {
        match byte {
            b'\n' => out.push_str("\\n\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            b'#' if line_start => out.push_str("\\x23"),
            0x20..0x7f => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
        line_start = byte == b'\n';
    }
    if !line_start || bytes.is_empty() {
        out.push('\n');
    }
}

/// One chunk read back from a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Which way it went.
    pub direction: Direction,
    /// The peer, as the header names it.
    pub peer: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Reads a dump back into its chunks: the inverse of [`format_chunk`], for tests and tools.
///
/// # Errors
///
/// A line that is neither a header nor a body line of `format`, or a body whose length is not
/// the one its header announces, is an error naming the line.
pub fn parse(format: DumpFormat, dump: &str) -> Result<Vec<Chunk>, String> {
    let mut chunks: Vec<(Chunk, usize)> = Vec::new();
    let mut body = String::new();
    let finish = |chunks: &mut Vec<(Chunk, usize)>, body: &mut String| {
        if let Some((chunk, len)) = chunks.last_mut() {
            chunk.bytes = match format {
                DumpFormat::Hex => unhexdump(body, *len)?,
                DumpFormat::Text => unescape_text(body)?,
            };
            if chunk.bytes.len() != *len {
                return Err(format!(
                    "a chunk announced {len} bytes and holds {}",
                    chunk.bytes.len()
                ));
            }
        }
        body.clear();
        Ok::<(), String>(())
    };
    for line in dump.lines() {
        if let Some(header) = line.strip_prefix("# ") {
            finish(&mut chunks, &mut body)?;
            chunks.push(parse_header(header).ok_or_else(|| format!("bad header {line:?}"))?);
        } else if chunks.is_empty() {
            return Err(format!("a body line before any header: {line:?}"));
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    finish(&mut chunks, &mut body)?;
    Ok(chunks.into_iter().map(|(chunk, _)| chunk).collect())
}

/// `TIME sent N bytes to PEER` or `TIME received N bytes from PEER`: the chunk and its length.
fn parse_header(header: &str) -> Option<(Chunk, usize)> {
    let mut words = header.splitn(6, ' ');
    let _time = words.next()?;
    let direction = match words.next()? {
        "sent" => Direction::Sent,
        "received" => Direction::Received,
        _ => return None,
    };
    let len = words.next()?.parse().ok()?;
    (words.next()? == "bytes").then_some(())?;
    let _preposition = words.next()?;
    let peer = words.next()?.to_string();
    let chunk = Chunk {
        direction,
        peer,
        bytes: Vec::new(),
    };
    Some((chunk, len))
}

/// The bytes of a `hexdump -C` body, its `*` runs expanded; an offset past `len` (the
/// header's count) is an error, so a bad dump cannot make a `*` run fill gigabytes.
fn unhexdump(body: &str, len: usize) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut last_line: Vec<u8> = Vec::new();
    let mut squeezed = false;
    for line in body.lines() {
        if line == "*" {
            squeezed = true;
            continue;
        }
        let offset = usize::from_str_radix(line.get(..8).unwrap_or(line), 16)
            .map_err(|_| format!("bad offset in {line:?}"))?;
        if offset > len {
            return Err(format!(
                "offset {offset:08x} past the {len} bytes announced"
            ));
        }
        if squeezed {
            while bytes.len() < offset && !last_line.is_empty() {
                bytes.extend_from_slice(&last_line);
            }
            squeezed = false;
        }
        if bytes.len() != offset {
            return Err(format!("offset {offset:08x} after {} bytes", bytes.len()));
        }
        let Some(hex) = line.get(10..59) else {
            continue; // the closing length line
        };
        last_line = hex
            .split_whitespace()
            .map(|pair| u8::from_str_radix(pair, 16).map_err(|_| format!("bad byte {pair:?}")))
            .collect::<Result<_, _>>()?;
        bytes.extend_from_slice(&last_line);
    }
    Ok(bytes)
}

/// The bytes of a `text` body: escapes decoded, the line breaks after each chunk of text
/// (which are not data) dropped.
fn unescape_text(body: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut rest = body.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'\n' => {}
            b'\\' => {
                let (&kind, tail) = rest.split_first().ok_or("a lone backslash")?;
                rest = tail;
                match kind {
                    b'n' => bytes.push(b'\n'),
                    b'r' => bytes.push(b'\r'),
                    b't' => bytes.push(b'\t'),
                    b'\\' => bytes.push(b'\\'),
                    b'x' => {
                        let hex = rest.get(..2).ok_or("a short \\x escape")?;
                        let hex = std::str::from_utf8(hex).map_err(|e| e.to_string())?;
                        bytes.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                        rest = &rest[2..];
                    }
                    other => return Err(format!("unknown escape \\{}", char::from(other))),
                }
            }
            other => bytes.push(other),
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_partial_line_pads_to_the_printable_column() {
        let mut out = String::new();
        hexdump(b"abcdefghi", &mut out);
        assert_eq!(
            out,
            "00000000  61 62 63 64 65 66 67 68  69                       |abcdefghi|\n\
             00000009\n"
        );
    }

    #[test]
    fn equal_lines_are_squeezed_into_one_star() {
        let mut data = vec![0u8; 32];
        data.push(b'a');
        data.extend([0u8; 31]);
        let mut out = String::new();
        hexdump(&data, &mut out);
        assert_eq!(
            out,
            "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             *\n\
             00000020  61 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |a...............|\n\
             00000030  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             00000040\n"
        );
    }

    #[test]
    fn text_escapes_what_is_not_printable() {
        let mut out = String::new();
        escape_text(b"# a\\b\tc\r\nd\x00\xff", &mut out);
        assert_eq!(out, "\\x23 a\\\\b\\tc\\r\\n\nd\\x00\\xff\n");
    }

    fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
        // Runs of equal lines (squeezing), text with newlines and '#', and any bytes.
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(prop::sample::select(b"#\n\\a \x00".to_vec()), 0..200),
            (
                any::<u8>(),
                0usize..100,
                prop::collection::vec(any::<u8>(), 0..20)
            )
                .prop_map(|(b, n, tail)| {
                    let mut v = vec![b; n];
                    v.extend(tail);
                    v
                }),
        ]
    }

    proptest! {
        #[test]
        fn a_dump_parses_back_to_its_bytes(
            chunks in prop::collection::vec((bytes_strategy(), any::<bool>()), 1..5),
            text in any::<bool>(),
        ) {
            let format = if text { DumpFormat::Text } else { DumpFormat::Hex };
            let mut out = String::new();
            for (bytes, sent) in &chunks {
                let direction = if *sent { Direction::Sent } else { Direction::Received };
                format_chunk(format, SystemTime::now(), &"[::1]:9", direction, bytes, &mut out);
            }
            let parsed = parse(format, &out).unwrap();
            prop_assert_eq!(parsed.len(), chunks.len());
            for (chunk, (bytes, sent)) in parsed.iter().zip(&chunks) {
                prop_assert_eq!(&chunk.bytes, bytes);
                prop_assert_eq!(chunk.direction == Direction::Sent, *sent);
                prop_assert_eq!(&chunk.peer, "[::1]:9");
            }
        }
    }
}
