//! `--dump hex|text[=FILE]`: every chunk that goes by, in each direction, written to stderr or
//! a file (ncat's `-x`, socat's `-x`), never into the data on stdout.
//!
//! The text of a chunk is made in `format` (sans-IO, property-tested); a [`Dump`] is where it
//! goes: one writer shared by every connection and thread, each chunk written whole under its
//! lock so two connections' chunks never interleave.

mod format;

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use format::{Chunk, Direction, DumpFormat, escape_text, format_chunk, hexdump, parse};

use crate::error::Error;

/// What `--dump` asks for: a format and where to (stderr when no file is named).
///
/// ```
/// use socketkit::dump::{DumpFormat, DumpSpec};
/// let spec: DumpSpec = "hex=/tmp/dump.txt".parse().unwrap();
/// assert_eq!(spec.format, DumpFormat::Hex);
/// assert_eq!(spec.file.unwrap().to_str(), Some("/tmp/dump.txt"));
/// assert!("octal".parse::<DumpSpec>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpSpec {
    /// Hex or text.
    pub format: DumpFormat,
    /// The file to write; `None`: stderr.
    pub file: Option<PathBuf>,
}

impl FromStr for DumpSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<DumpSpec, String> {
        let (format, file) = match text.split_once('=') {
            Some((format, file)) if !file.is_empty() => (format, Some(PathBuf::from(file))),
            Some(_) => return Err("the file after '=' is empty".into()),
            None => (text, None),
        };
        let format = match format {
            "hex" => DumpFormat::Hex,
            "text" => DumpFormat::Text,
            _ => return Err("expected hex or text, then optionally =FILE".into()),
        };
        Ok(DumpSpec { format, file })
    }
}

/// Where dumped chunks go. Cloning shares the writer.
#[derive(Clone)]
pub struct Dump {
    format: DumpFormat,
    sink: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Dump {
    /// Opens what `spec` names: stderr, or the file (created or truncated).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (a usage error, exit 2) when the file cannot be opened for writing.
    pub fn open(spec: &DumpSpec) -> Result<Dump, Error> {
        let sink: Box<dyn Write + Send> = match &spec.file {
            None => Box::new(io::stderr()),
            Some(path) => Box::new(File::create(path).map_err(|e| {
                Error::Config(format!("cannot open the dump file {}: {e}", path.display()))
            })?),
        };
        Ok(Dump::to_writer(spec.format, sink))
    }

    /// A dump into any writer.
    pub fn to_writer(format: DumpFormat, writer: Box<dyn Write + Send>) -> Dump {
        Dump {
            format,
            sink: Arc::new(Mutex::new(writer)),
        }
    }

    /// Writes one chunk that went to or came from `peer`, now. A failing writer loses the
    /// chunk, not the connection: the dump is a view of the traffic, never a cause of its end.
    pub fn chunk(&self, peer: &dyn fmt::Display, direction: Direction, bytes: &[u8]) {
        let mut text = String::with_capacity(80 + bytes.len() * 4);
        format_chunk(
            self.format,
            SystemTime::now(),
            peer,
            direction,
            bytes,
            &mut text,
        );
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let _ = sink.write_all(text.as_bytes()).and_then(|()| sink.flush());
    }
}

impl fmt::Debug for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dump")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Two dumps are equal when they share a writer.
impl PartialEq for Dump {
    fn eq(&self, other: &Dump) -> bool {
        Arc::ptr_eq(&self.sink, &other.sink)
    }
}

impl Eq for Dump {}
