//! `socketkit send`: one message, one reply, on stdout byte for byte.

use std::io;
use std::os::unix::ffi::OsStrExt;

use socketkit::client::{SendOptions, send};

use crate::cli::SendArgs;

pub fn run(args: SendArgs) -> anyhow::Result<()> {
    let mut options = SendOptions::default();
    options.bind = args.bind;
    options.timeout = args.timeout;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match &args.message {
        Some(message) => {
            let message = io::Cursor::new(message.as_bytes().to_vec());
            send(&args.endpoint, message, &mut out, &options)?
        }
        None => send(&args.endpoint, io::stdin(), &mut out, &options)?,
    };
    Ok(())
}
