//! The `custody` binary: parse arguments, install logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;
use custody_agent::cli::Cli;
use custody_agent::output::{closed_pipe, quiet_on_closed_pipe, CLOSED_PIPE};

fn main() -> ExitCode {
    quiet_on_closed_pipe(|| {
        let cli = Cli::parse();
        custody_agent::logging::init(&cli.global, !cli.command.is_service());
        match custody_agent::cli::run(cli) {
            Ok(exit) => exit.into(),
            Err(err) if closed_pipe(&err) => ExitCode::from(CLOSED_PIPE),
            Err(err) => {
                eprintln!("custody: error: {err:#}");
                custody_agent::Exit::Error.into()
            }
        }
    })
}
