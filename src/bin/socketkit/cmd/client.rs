//! `socketkit client`: the slides' clients in a loop (datagrams) or nc-style full duplex
//! (streams).

use std::io::{self, IsTerminal};

use socketkit::client::talk;

use crate::cli::ClientArgs;

/// The slides' `input()` prompt, shown only when a person types at a terminal.
const PROMPT: &str = "Input a lowercase sentence:";

pub fn run(args: ClientArgs) -> anyhow::Result<()> {
    let mut options = super::send::options(args.bind, args.timeout, &args.framing);
    options.quit_after = args.quit_after;
    #[cfg(feature = "tls")]
    {
        options.tls = super::tls::client(&args.tls, &args.endpoint)?;
    }
    #[cfg(not(feature = "tls"))]
    super::tls::refuse(args.tls.any(), &[&args.endpoint])?;
    options.dump = args.dump.open()?;
    let prompt =
        (io::stdin().is_terminal() && !args.endpoint.transport().is_connected()).then_some(PROMPT);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let input = io::BufReader::new(io::stdin());
    talk(
        &args.endpoint,
        input,
        &mut out,
        prompt,
        !args.no_shutdown,
        &options,
    )?;
    Ok(())
}
