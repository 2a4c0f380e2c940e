//! custody-agent: the `custody` command line and background service.
//!
//! The binary only wires [`cli::run`]; everything that touches carriers or the journal goes
//! through custody-core. This crate never names a cryptoki or rusqlite type.
//!
//! # Layout
//!
//! - [`cli`]: one module per subcommand.
//! - [`config`]: the TOML configuration, validated; PIN sources.
//! - [`deadline`]: when destruction orders are due.
//! - [`config`]: the TOML configuration, validated.
//! - [`pin`]: PINs from the `[[pin]]` rules, with the memory of rejected PINs.
//! - [`output`]: tables for people, JSON for scripts.
//! - [`progress`]: progress bars on a terminal, nothing otherwise.
//! - [`logging`]: tracing subscriber (human or JSON).
//! - [`spool`]: the order spool directory, one pass at a time.
//! - [`service`]: the background service ([`service::run`]), built from [`worker`] (the
//!   thread that owns PKCS#11 and the journal), [`watch`] (timing), [`shutdown`] and
//!   [`state`] (the state record `custody status` reads); [`poll`] is what one poll found.

pub mod cli;
pub mod config;
pub mod deadline;
pub mod local_time;
pub mod logging;
pub mod output;
pub mod pin;
pub mod poll;
pub mod progress;
pub mod service;
pub mod shutdown;
pub mod spool;
pub mod state;
pub mod watch;
pub mod worker;

pub use service::run;

use std::process::ExitCode;

/// Exit codes: 0 ok, 1 a check failed or something was refused, 2 error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Ok,
    /// A check failed or something was refused.
    Failed,
    /// An error; the outcome may be incomplete.
    Error,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Ok => Self::SUCCESS,
            Exit::Failed => Self::from(1),
            Exit::Error => Self::from(2),
        }
    }
}
