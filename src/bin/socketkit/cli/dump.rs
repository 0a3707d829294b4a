//! `--dump hex|text[=FILE]`, shared by send, client, listen, relay and serve.

use clap::Args;
use socketkit::dump::{Dump, DumpSpec};

/// The dump flag, flattened into each command that moves bytes.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Show every chunk each way on stderr, or in FILE: a `#` header line (time, direction,
    /// byte count, peer), then the bytes in `hexdump -C`'s layout (hex) or as text with
    /// non-printables escaped (\n, \r, \t, \\, \xNN). stdout's data is untouched. ncat's and
    /// socat's -x; long name only, as nc's -x is a proxy. A FILE that cannot be opened for
    /// writing exits 2 at start.
    #[arg(long, value_name = "hex|text[=FILE]")]
    pub dump: Option<DumpSpec>,
}

impl DumpArgs {
    /// Opens the dump's writer, if one is asked for.
    pub fn open(&self) -> Result<Option<Dump>, socketkit::Error> {
        self.dump.as_ref().map(Dump::open).transpose()
    }
}
