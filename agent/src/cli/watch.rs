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

/// Signals this close to the first are the same request (GNU `timeout` sends SIGTERM to the
/// child and then to its process group).
const SAME_REQUEST: Duration = Duration::from_millis(250);

/// Runs the service. The first SIGTERM or SIGINT finishes the PKCS#11 call and journal
/// transaction in hand, ends every wait between PKCS#11 calls, and exits 0; a second one
/// (later than `SAME_REQUEST`) exits at once with 2.
pub fn run(ctx: &Context, args: &WatchArgs) -> anyhow::Result<Exit> {
    ctx.create_default_dir()?;
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
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Listens from the start (also while the service is still opening the journal).
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            let first = std::time::Instant::now();
            // Waits between PKCS#11 calls (another journal writer, the wipe lock, the
            // spool's files) give up now; the PKCS#11 call in hand finishes.
            custody_core::stop::request();
            tracing::info!(
                signal = name,
                "shutdown requested; a second signal exits at once"
            );
            let _ = stop_tx.send(());
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if first.elapsed() < SAME_REQUEST {
                    // GNU timeout signals the child and then its process group: one request.
                    tracing::debug!(signal = name, "signal repeated at once: the same request");
                    continue;
                }
                tracing::warn!(signal = name, "second signal: exiting at once");
                // _exit, not exit: no atexit handler runs, in particular no C++ static
                // destructor of a loaded PKCS#11 module, which could crash while the worker
                // thread is still inside that module. SQLite rolls back an unfinished
                // transaction at the next open.
                signal_hook::low_level::exit(2);
            }
        });
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        service::run(cfg, shutdown).await
    })?;
    Ok(Exit::Ok)
}
