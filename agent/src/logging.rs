//! The tracing subscriber: human-readable on stderr by default, JSON lines for journald or a
//! SIEM with `--log-format json`. Level from `--verbose`, or `CUSTODY_LOG` (an env-filter).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

/// Installs the global subscriber. Call once, from `main`. Commands print their own
/// warnings, so they log only errors by default; the service logs at info.
pub fn init(args: &GlobalArgs, quiet_default: bool) {
    let default = match args.verbose {
        0 if quiet_default => "error",
        0 => "info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("CUSTODY_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    // Colours only on a terminal: not in files, pipes or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests calling run twice in one process) is harmless.
    drop(result);
}
