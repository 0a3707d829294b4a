//! `socketkit completions SHELL`: clap_complete writes the script.

use clap::CommandFactory;

use crate::cli::Cli;

pub fn run(shell: clap_complete::Shell) -> anyhow::Result<()> {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "socketkit",
        &mut std::io::stdout(),
    );
    Ok(())
}
