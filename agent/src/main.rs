//! The `custody` binary: parse arguments, install logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;
use custody_agent::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    custody_agent::logging::init(&cli.global, !cli.command.is_service());
    match custody_agent::cli::run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("custody: error: {err:#}");
            custody_agent::Exit::Error.into()
        }
    }
}
