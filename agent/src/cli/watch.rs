//! `custody watch`: the background service. Runs until SIGTERM or SIGINT.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use super::Context;
use crate::config::parse_duration;
use crate::service::{self, ServiceConfig};
use crate::Exit;

/// Arguments of `custody watch` (modules and journal are global options).
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Poll interval, e.g. 2s or 500ms. Default: [service] interval, else 2s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Time between content checks of present carriers (certificates and keys added or
    /// removed, tokens re-initialised in place), e.g. 10s. Default: [service] check_interval,
    /// else measured so that checks add at most 3 % to the modules' own polling cost, and at
    /// most 30 s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub check_interval: Option<Duration>,
}

/// Runs the service. The first SIGTERM or SIGINT finishes the journal transaction in hand
/// and exits 0; a second one exits at once with 2.
pub fn run(ctx: &Context, args: &WatchArgs) -> anyhow::Result<Exit> {
    let cfg = ServiceConfig {
        config: ctx.config.clone(),
        journal: ctx.journal_path(),
        modules: ctx
            .modules()
            .into_iter()
            .map(|m| {
                let policy = ctx.config.reinit(&m);
                (m, policy)
            })
            .collect(),
        interval: args.interval.unwrap_or(ctx.config.interval),
        check_interval: args.check_interval.or(ctx.config.check_interval),
        actor: ctx.actor(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let shutdown = async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(
                signal = name,
                "shutdown requested; a second signal exits at once"
            );
            tokio::spawn(async move {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::warn!(signal = name, "second signal: exiting at once");
                // _exit, not exit: no atexit handler runs, in particular no C++ static
                // destructor of a loaded PKCS#11 module, which could crash while the worker
                // thread is still inside that module. SQLite rolls back an unfinished
                // transaction at the next open.
                signal_hook::low_level::exit(2);
            });
        };
        service::run(cfg, shutdown).await
    })?;
    Ok(Exit::Ok)
}
