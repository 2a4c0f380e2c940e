//! The background service behind `custody watch`: [`run`] until a shutdown future resolves.
//!
//! Parts: the worker thread ([`crate::worker`]) owns the modules and the journal and polls
//! them every interval, timed by [`crate::watch`]; after each poll it updates the state
//! record ([`crate::state`]) and runs every [`Task`] once. This async side waits for the
//! shutdown signal and coordinates the stop through [`crate::shutdown`]: the poll in hand
//! and its journal transaction are finished, the worker records `last_seen` of the carriers
//! present and finalises the modules, then `run` returns.

pub mod expiry;
pub mod fleet;
pub mod orders;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use custody_core::journal::Actor;

use crate::config::{Config, Reinit};
use crate::shutdown::Coordinator;
use crate::state::StateFile;
use crate::worker::{self, Task, WorkerConfig};

/// What the service runs with.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The configuration (PIN sources, spool, …).
    pub config: Config,
    /// The journal file.
    pub journal: PathBuf,
    /// The modules and their re-initialisation policy.
    pub modules: Vec<(PathBuf, Reinit)>,
    /// Poll interval.
    pub interval: Duration,
    /// Fixed time between content checks (`None`: from the measured cost).
    pub check_interval: Option<Duration>,
    /// Who the service's events are recorded as.
    pub actor: Actor,
}

/// The tasks the service runs every interval, in order: certificate expiry warnings, and the
/// order spool when `[orders] allowed_signers` is configured.
pub fn tasks(config: &Config, journal: &std::path::Path) -> Vec<Box<dyn Task>> {
    let mut tasks: Vec<Box<dyn Task>> = vec![Box::new(expiry::ExpiryTask::new(journal))];
    match &config.allowed_signers {
        Some(signers) => tasks.push(Box::new(orders::OrderTask::new(
            config.spool.clone(),
            signers.clone(),
            config.required_signers,
        ))),
        None => tracing::info!(
            spool = %config.spool.display(),
            "no [orders] allowed_signers configured: the order spool is not processed"
        ),
    }
    tasks
}

/// Runs the service until `shutdown` resolves (or the worker fails). Returns `Ok` after a
/// clean shutdown: the poll in hand and its journal transaction finished, `last_seen` of the
/// carriers present recorded, the modules finalised.
pub async fn run(cfg: ServiceConfig, shutdown: impl Future) -> anyhow::Result<()> {
    let coordinator = Coordinator::new();
    let (_, done) = coordinator.part();
    let (worker, mut exit) = worker::start(
        WorkerConfig {
            journal: cfg.journal.clone(),
            modules: cfg.modules.clone(),
            config: cfg.config.clone(),
            actor: cfg.actor.clone(),
            interval: cfg.interval,
            check_interval: cfg.check_interval,
            state_path: StateFile::path_for(&cfg.journal),
        },
        tasks(&cfg.config, &cfg.journal),
        done,
    )
    .await?;
    // The worker thread waits on its own channel, not on the broadcast: forward it.
    let (mut listen, forwarded) = coordinator.part();
    let stopper = worker.clone();
    tokio::spawn(async move {
        listen.recv().await;
        stopper.stop();
        drop(forwarded);
    });
    let syncer = match &cfg.config.fleet {
        Some(settings) => Some(fleet::Syncer::start(settings.clone(), cfg.journal.clone())?),
        None => None,
    };
    tracing::info!(
        journal = %cfg.journal.display(),
        modules = cfg.modules.len(),
        interval_ms = cfg.interval.as_millis() as u64,
        "watching"
    );
    tokio::pin!(shutdown);
    let result = tokio::select! {
        r = &mut exit => r,
        _ = &mut shutdown => {
            tracing::info!("stopping: finishing the poll in hand");
            coordinator.trigger();
            (&mut exit).await
        }
    };
    coordinator.trigger();
    if let Some(s) = syncer {
        s.stop(Duration::from_secs(2));
    }
    drop(worker);
    coordinator.finished().await;
    result.map_err(|_| anyhow::anyhow!("the worker thread ended abnormally (it panicked)"))??;
    tracing::info!("stopped");
    Ok(())
}
