//! The `socketkit` binary: parse, run, turn the outcome into an exit code. Nothing else.

#![deny(unsafe_code)]

mod cli;
mod cmd;
mod malloc;

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use socketkit::ErrorKind;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    init_logging(cli.verbose, cli.quiet, cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args, cli.quiet),
        Command::Send(args) => cmd::send::run(args),
        Command::Client(args) => cmd::client::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Resolve(args) => cmd::resolve::run(args),
        Command::Addr(args) => cmd::addr::run(args),
        Command::Port(args) => cmd::port::run(args),
        Command::Ping(args) => cmd::ping::run(args, cli.quiet),
        Command::Services { json } => cmd::services::run(json),
        Command::Completions { shell } => cmd::completions::run(shell),
        Command::Report(args) => cmd::report::run(args),
        Command::Listen(args) => cmd::listen::run(args, cli.verbose > 0),
        Command::Relay(args) => cmd::relay::run(args, cli.quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS, // `socketkit ... | head`
        Err(error) => {
            if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::error!("socketkit: error: {error:#}");
            } else {
                say(format_args!("socketkit: error: {error:#}"));
            }
            ExitCode::from(exit_code(&error))
        }
    }
}

/// A usage error is one line and exit 2, like every other error; help and version go where
/// clap sends them.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as Clap;
    if !error.use_stderr() || error.kind() == Clap::DisplayHelpOnMissingArgumentOrSubcommand {
        error.exit();
    }
    let args: Vec<_> = std::env::args_os().collect();
    say(format_args!(
        "socketkit: error: {}",
        cli::usage_line(&error, &args)
    ));
    ExitCode::from(ErrorKind::Usage.exit_code())
}

/// Whether `--log-format json` is on: then every stderr line is a JSON log line.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One line on stderr. A closed stderr must not panic (eprintln! would): the line is lost, the
/// work goes on. With `--log-format json`, an info log line (JSON) instead.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("{line}");
        return;
    }
    let _ = writeln!(io::stderr(), "{line}");
}

/// The first cause socketkit can classify decides the exit code.
fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<socketkit::Error>() {
            return e.kind().exit_code();
        }
        if let Some(e) = cause.downcast_ref::<io::Error>() {
            return ErrorKind::of_io(e).exit_code();
        }
    }
    ErrorKind::Other.exit_code()
}

/// The client already treats a server that stops reading as normal, so a broken pipe that
/// reaches this point is stdout's: the reader of our output went away, which is not a failure.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr; RUST_LOG wins over -v/-q; colour only on a terminal without NO_COLOR.
/// `--log-format json`: one JSON object per line (tracing-subscriber's JSON layer), always
/// with its timestamp, never coloured.
fn init_logging(verbose: u8, quiet: bool, format: cli::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false)
        .log_internal_errors(false); // a closed stderr must not panic the logging thread
    match format {
        cli::LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            builder.json().with_ansi(false).init()
        }
        cli::LogFormat::Human if verbose > 0 => builder.with_ansi(ansi).init(),
        cli::LogFormat::Human => builder.with_ansi(ansi).without_time().init(),
    }
}
